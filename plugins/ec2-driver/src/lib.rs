//! Amazon EC2 as a `cloud-driver` component: `RunInstances` with the agent's bootstrap as
//! user-data, `DescribeInstances`, `TerminateInstances`, through EC2's Query API
//! (form-encoded POST, XML answers) signed with SigV4.
//!
//! Settings: `endpoint` (`https://ec2.REGION.amazonaws.com`, or any EC2-compatible API),
//! `region`, `image` (an AMI id), `instance-type` (default `t3.micro`), and optionally
//! `subnet` and `security-groups` (comma-separated ids). Secrets (key references in the
//! provider's settings): `secret-access-key`, and `session-token-key` for temporary
//! credentials; `access-key-id` is a secret or a setting.

wit_bindgen::generate!({ world: "cloud-driver", path: "../../wit" });

mod answer;
mod http;
mod sigv4;

use exports::stratus::plugin::cloud_servers::{
    DriverConfig, DriverError, Guest, LaunchRequest, ServerHandle, ServerState,
};
use http::Endpoint;

/// The EC2 API version the calls are written for.
const API_VERSION: &str = "2016-11-15";
/// The instance type when the settings name none.
const DEFAULT_INSTANCE_TYPE: &str = "t3.micro";
/// Longest idempotency token EC2 accepts.
const MAX_CLIENT_TOKEN: usize = 64;

struct Ec2Driver;

fn refuse(message: String) -> DriverError {
    DriverError {
        message,
        retryable: false,
    }
}

/// The settings and secrets one call works with.
struct Api<'a> {
    endpoint: Endpoint,
    region: &'a str,
    creds: sigv4::Credentials<'a>,
    config: &'a DriverConfig,
}

impl<'a> Api<'a> {
    fn new(config: &'a DriverConfig) -> Result<Api<'a>, DriverError> {
        let api = Api {
            endpoint: Endpoint::parse(required(config, "endpoint")?).map_err(refuse)?,
            region: required(config, "region")?,
            creds: sigv4::Credentials {
                access_key_id: secret(config, "access-key-id")
                    .or_else(|_| required(config, "access-key-id"))?,
                secret_access_key: secret(config, "secret-access-key")?,
                // A key reference's setting name ends in `-key`.
                session_token: config
                    .secrets
                    .iter()
                    .find(|s| s.name == "session-token-key" || s.name == "session-token")
                    .map(|s| s.value.as_str()),
            },
            config,
        };
        if !api
            .region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(refuse(format!(
                "setting `region` = `{}` is not a region name",
                api.region.escape_default()
            )));
        }
        Ok(api)
    }

    fn setting(&self, key: &str) -> Option<&'a str> {
        setting(self.config, key)
    }

    /// Calls `action` with `params` and returns the answer's body, or what went wrong.
    fn call(&self, action: &str, params: &[(String, String)]) -> Result<Vec<u8>, Called> {
        let mut form = format!("Action={action}&Version={API_VERSION}");
        for (k, v) in params {
            form.push('&');
            form.push_str(&encode(k));
            form.push('=');
            form.push_str(&encode(v));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let date = sigv4::AmzDate::from_unix(now);
        let host = self.endpoint.host_header();
        let headers = sigv4::sign(&self.creds, self.region, "ec2", &host, &date, &form);
        let answer = http::post(&self.endpoint, &headers, form.as_bytes()).map_err(|f| {
            Called::Failed(DriverError {
                message: f.message,
                retryable: f.retryable,
            })
        })?;
        if (200..300).contains(&answer.status) {
            return Ok(answer.body);
        }
        match answer::error(&answer.body) {
            Some(e) => Err(Called::Api(e, answer.status)),
            None => Err(Called::Failed(DriverError {
                message: format!("{action} answered HTTP {} without an error", answer.status),
                retryable: answer.status >= 500,
            })),
        }
    }
}

/// Why a call gave no answer: EC2 said no, or it could not be asked.
enum Called {
    Api(answer::ApiError, u16),
    Failed(DriverError),
}

impl Called {
    fn into_error(self, action: &str) -> DriverError {
        match self {
            Called::Api(e, status) => DriverError {
                retryable: e.retryable() || status >= 500,
                message: format!("{action} failed: {} ({})", e.message, e.code),
            },
            Called::Failed(e) => e,
        }
    }
}

fn setting<'a>(config: &'a DriverConfig, key: &str) -> Option<&'a str> {
    config
        .settings
        .iter()
        .find(|s| s.key == key)
        .map(|s| s.value.as_str())
        .filter(|v| !v.is_empty())
}

fn required<'a>(config: &'a DriverConfig, key: &str) -> Result<&'a str, DriverError> {
    setting(config, key).ok_or_else(|| refuse(format!("the provider has no setting `{key}`")))
}

fn secret<'a>(config: &'a DriverConfig, name: &str) -> Result<&'a str, DriverError> {
    config
        .secrets
        .iter()
        .find(|s| s.name == name && !s.value.is_empty())
        .map(|s| s.value.as_str())
        .ok_or_else(|| refuse(format!("the provider's `secrets` name no `{name}`")))
}

/// RFC 3986 percent-encoding of a form value, as SigV4's canonical form wants.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn pair(k: &str, v: &str) -> (String, String) {
    (k.to_owned(), v.to_owned())
}

/// The request parameters of a `RunInstances` for `req`.
fn run_params(api: &Api<'_>, req: &LaunchRequest) -> Result<Vec<(String, String)>, DriverError> {
    use base64::Engine as _;
    let image = required(&req.config, "image")?;
    let mut params = vec![
        pair("ImageId", image),
        pair(
            "InstanceType",
            api.setting("instance-type")
                .unwrap_or(DEFAULT_INSTANCE_TYPE),
        ),
        pair("MinCount", "1"),
        pair("MaxCount", "1"),
        pair(
            "UserData",
            &base64::engine::general_purpose::STANDARD.encode(&req.bootstrap),
        ),
        pair("TagSpecification.1.ResourceType", "instance"),
        pair("TagSpecification.1.Tag.1.Key", "Name"),
        pair("TagSpecification.1.Tag.1.Value", &req.server_name),
    ];
    // The same server name asks for the same instance, so a launch retried after a crash
    // does not start a second one.
    if req.server_name.len() <= MAX_CLIENT_TOKEN && req.server_name.is_ascii() {
        params.push(pair("ClientToken", &req.server_name));
    }
    if let Some(subnet) = api.setting("subnet") {
        params.push(pair("SubnetId", subnet));
    }
    if let Some(groups) = api.setting("security-groups") {
        for (i, g) in groups
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .enumerate()
        {
            params.push((format!("SecurityGroupId.{}", i + 1), g.to_owned()));
        }
    }
    Ok(params)
}

impl Guest for Ec2Driver {
    fn launch_server(req: LaunchRequest) -> Result<ServerHandle, DriverError> {
        let api = Api::new(&req.config)?;
        let params = run_params(&api, &req)?;
        let body = api
            .call("RunInstances", &params)
            .map_err(|c| c.into_error("RunInstances"))?;
        let launched = answer::launched(&body).map_err(|e| DriverError {
            message: format!("RunInstances: {e}"),
            retryable: false,
        })?;
        Ok(ServerHandle {
            id: launched.id,
            address: launched.address,
        })
    }

    fn describe_server(
        handle: ServerHandle,
        config: DriverConfig,
    ) -> Result<ServerState, DriverError> {
        let api = Api::new(&config)?;
        let params = [pair("InstanceId.1", &handle.id)];
        let body = match api.call("DescribeInstances", &params) {
            Ok(body) => body,
            Err(Called::Api(e, _)) if e.not_found() => return Ok(ServerState::Gone),
            Err(c) => return Err(c.into_error("DescribeInstances")),
        };
        let state = answer::state_of(&body, &handle.id).map_err(|e| DriverError {
            message: format!("DescribeInstances: {e}"),
            retryable: false,
        })?;
        Ok(match state.as_deref() {
            Some("pending") => ServerState::Pending,
            Some("running") => ServerState::Running,
            Some("shutting-down" | "stopping" | "stopped") => ServerState::Stopping,
            Some("terminated") | None => ServerState::Gone,
            Some(other) => {
                return Err(refuse(format!(
                    "DescribeInstances: unknown state `{}`",
                    other.escape_default()
                )));
            }
        })
    }

    fn terminate_server(handle: ServerHandle, config: DriverConfig) -> Result<(), DriverError> {
        let api = Api::new(&config)?;
        let params = [pair("InstanceId.1", &handle.id)];
        match api.call("TerminateInstances", &params) {
            Ok(_) => Ok(()),
            Err(Called::Api(e, _)) if e.not_found() => Ok(()),
            Err(c) => Err(c.into_error("TerminateInstances")),
        }
    }
}

export!(Ec2Driver);
