    fn install_service(ctx: ServiceContext) -> Result<(), HookError> {
        log::info(&format!("install-service into {}", ctx.service_dir));
        Ok(())
    }

    fn install_data_source(ctx: ServiceContext) -> Result<(), HookError> {
        let database = ctx.data_source.as_ref().map_or("none", |d| d.database.as_str());
        log::info(&format!("install-data-source: {database}"));
        Ok(())
    }

    fn configure(ctx: ServiceContext) -> Result<(), HookError> {
        // `greeting` is a setting of the deployment file; the default keeps a bare call working.
        let greeting = setting(&ctx, "greeting").unwrap_or("hello").to_string();
        let extra = [("greeting".to_string(), greeting)];
        let text = files::render_template_with(
            &ctx,
            "cfg/__NAME__.conf",
            &extra,
            template::Escaping::None,
        )?;
        let out = files::service_path(&ctx, "__NAME__.conf");
        files::write(&out, text)?;
        log::info(&format!("wrote {}", out.display()));
        Ok(())
    }

    fn start(ctx: ServiceContext) -> Result<(), HookError> {
        log::info(&format!("start on {}", ctx.server.name));
        Ok(())
    }

    fn stop(ctx: ServiceContext) -> Result<(), HookError> {
        log::info(&format!("stop on {}", ctx.server.name));
        Ok(())
    }

    fn grant_database_access(
        _ctx: ServiceContext,
        grants: Vec<DatabaseGrant>,
    ) -> Result<(), HookError> {
        log::info(&format!("grant-database-access: {} grants", grants.len()));
        Ok(())
    }

    fn revoke_database_access(
        _ctx: ServiceContext,
        grants: Vec<DatabaseGrant>,
    ) -> Result<(), HookError> {
        log::info(&format!("revoke-database-access: {} grants", grants.len()));
        Ok(())
    }

    fn health_check(ctx: ServiceContext) -> Result<HealthReport, HookError> {
        let conf = files::service_path(&ctx, "__NAME__.conf");
        Ok(if conf.exists() {
            HealthReport {
                status: HealthStatus::Ok,
                message: "__NAME__.conf present".into(),
            }
        } else {
            HealthReport {
                status: HealthStatus::Critical,
                message: "__NAME__.conf missing".into(),
            }
        })
    }
