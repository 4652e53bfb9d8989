//! Model types (serde mirrors) to and from the generated WIT types.

use crate::bindings::types as w;
use stratus_model::context as m;

fn server(s: &m::ServerInfo) -> w::ServerInfo {
    w::ServerInfo {
        id: s.id.clone(),
        name: s.name.clone(),
        address: s.address.clone(),
    }
}

fn settings(s: &[(String, String)]) -> Vec<w::Setting> {
    s.iter()
        .map(|(k, v)| w::Setting {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

fn ports(p: &[m::Port]) -> Vec<w::Port> {
    p.iter()
        .map(|p| w::Port {
            name: p.name.clone(),
            private_port: p.private_port,
            public_port: p.public_port,
        })
        .collect()
}

fn credentials(c: &[m::Credential]) -> Vec<w::Credential> {
    c.iter()
        .map(|c| w::Credential {
            name: c.name.clone(),
            user: c.user.clone(),
            password: c.password.clone(),
        })
        .collect()
}

fn dependency(d: &m::Dependency) -> w::Dependency {
    w::Dependency {
        service: d.service.clone(),
        kind: match d.kind {
            m::DependencyKind::Service => w::DependencyKind::Service,
            m::DependencyKind::DataSource => w::DependencyKind::DataSource,
        },
        servers: d.servers.iter().map(server).collect(),
        ports: ports(&d.ports),
        credentials: credentials(&d.credentials),
        database: d.database.clone(),
        settings: settings(&d.settings),
    }
}

pub(crate) fn service_context(c: &m::ServiceContext) -> w::ServiceContext {
    w::ServiceContext {
        deployment: c.deployment.clone(),
        tier: c.tier.clone(),
        server: server(&c.server),
        service_id: c.service_id.clone(),
        service_name: c.service_name.clone(),
        service_dir: c.service_dir.clone(),
        settings: settings(&c.settings),
        ports: ports(&c.ports),
        credentials: credentials(&c.credentials),
        data_source: c.data_source.as_ref().map(|d| w::DataSource {
            database: d.database.clone(),
            image_path: d.image_path.clone(),
        }),
        dependencies: c.dependencies.iter().map(dependency).collect(),
    }
}

pub(crate) fn cm_context(c: &m::CmContext) -> w::CmContext {
    w::CmContext {
        deployment: c.deployment.clone(),
        tier: c.tier.clone(),
        server: server(&c.server),
        server_root: c.server_root.clone(),
        work_dir: c.work_dir.clone(),
        run_list: c.run_list.clone(),
        settings: settings(&c.settings),
        credentials: credentials(&c.credentials),
    }
}

pub(crate) fn grants(g: &[m::DatabaseGrant]) -> Vec<w::DatabaseGrant> {
    g.iter()
        .map(|g| w::DatabaseGrant {
            service: g.service.clone(),
            database: g.database.clone(),
            user: g.user.clone(),
            password: g.password.clone(),
            addresses: g.addresses.clone(),
        })
        .collect()
}

pub(crate) fn nodes(n: &[m::ProxyNode]) -> Vec<w::ProxyNode> {
    n.iter()
        .map(|n| w::ProxyNode {
            server: server(&n.server),
            port: n.port,
        })
        .collect()
}

pub(crate) fn health(h: w::HealthReport) -> m::HealthReport {
    m::HealthReport {
        status: match h.status {
            w::HealthStatus::Ok => m::HealthStatus::Ok,
            w::HealthStatus::Warning => m::HealthStatus::Warning,
            w::HealthStatus::Critical => m::HealthStatus::Critical,
            w::HealthStatus::Unknown => m::HealthStatus::Unknown,
        },
        message: h.message,
    }
}

pub(crate) fn cm_report(r: w::CmReport) -> m::CmReport {
    m::CmReport {
        summary: r.summary,
        produced: r.produced,
    }
}
