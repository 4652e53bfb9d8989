    def install_service(self, ctx):
        log.info(f"install-service into {ctx.service_dir}")

    def install_data_source(self, ctx):
        database = ctx.data_source.database if ctx.data_source else "none"
        log.info(f"install-data-source: {database}")

    def configure(self, ctx):
        # `greeting` is a setting of the deployment file; the default keeps a bare call working.
        greeting = stratus.setting(ctx, "greeting", "hello")
        path = stratus.render_file(
            ctx, "cfg/__NAME__.conf", "__NAME__.conf", extra={"greeting": greeting}
        )
        log.info(f"wrote {path}")

    def start(self, ctx):
        log.info(f"start on {ctx.server.name}")

    def stop(self, ctx):
        log.info(f"stop on {ctx.server.name}")

    def grant_database_access(self, ctx, grants):
        log.info(f"grant-database-access: {len(grants)} grants")

    def revoke_database_access(self, ctx, grants):
        log.info(f"revoke-database-access: {len(grants)} grants")

    def health_check(self, ctx):
        if os.path.exists(os.path.join(ctx.service_dir, "__NAME__.conf")):
            return HealthReport(HealthStatus.OK, "__NAME__.conf present")
        return HealthReport(HealthStatus.CRITICAL, "__NAME__.conf missing")
