  installService(ctx) {
    log.info(`install-service into ${ctx.serviceDir}`);
  },

  installDataSource(ctx) {
    log.info(`install-data-source: ${ctx.dataSource?.database ?? 'none'}`);
  },

  configure(ctx) {
    // `greeting` is a setting of the deployment file; the default keeps a bare call working.
    const greeting = setting(ctx, 'greeting') ?? 'hello';
    const path = renderFile(ctx, 'cfg/__NAME__.conf', '__NAME__.conf', { greeting });
    log.info(`wrote ${path}`);
  },

  start(ctx) {
    log.info(`start on ${ctx.server.name}`);
  },

  stop(ctx) {
    log.info(`stop on ${ctx.server.name}`);
  },

  grantDatabaseAccess(ctx, grants) {
    log.info(`grant-database-access: ${grants.length} grants`);
  },

  revokeDatabaseAccess(ctx, grants) {
    log.info(`revoke-database-access: ${grants.length} grants`);
  },

  healthCheck(ctx) {
    return isFile(servicePath(ctx, '__NAME__.conf'))
      ? { status: 'ok', message: '__NAME__.conf present' }
      : { status: 'critical', message: '__NAME__.conf missing' };
  },
