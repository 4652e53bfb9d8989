//! One HTTP POST through `wasi:http/outgoing-handler`, the driver's only way out. The host
//! refuses any origin it did not grant (`http-request-denied`) and bounds the answer; the
//! driver bounds it too.

use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasip2::io::streams::StreamError;

/// Largest answer read; EC2's answers to one instance's calls are a few KiB.
const MAX_ANSWER_BYTES: usize = 4 << 20;
/// Bytes written to the request body per call (the host's buffer takes at most 1 MiB).
const WRITE_CHUNK: usize = 4096;

/// Where the API is: scheme and authority of the `endpoint` setting.
pub struct Endpoint {
    pub https: bool,
    /// `host[:port]` as the request names it, lowercase.
    pub authority: String,
}

impl Endpoint {
    /// `http://host:port` or `https://host[:port]`, nothing after the authority but `/`.
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        let bad = || {
            format!(
                "setting `endpoint` = `{}` must be `https://host[:port]` or `http://host:port`",
                text.escape_default()
            )
        };
        let (https, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(bad());
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']');
        if authority.is_empty() || !authority.chars().all(valid) {
            return Err(bad());
        }
        Ok(Endpoint {
            https,
            authority: authority.to_ascii_lowercase(),
        })
    }

    /// The `Host` header the host sends: the authority without the scheme's default port.
    pub fn host_header(&self) -> String {
        let default = if self.https { ":443" } else { ":80" };
        self.authority
            .strip_suffix(default)
            .unwrap_or(&self.authority)
            .to_owned()
    }
}

/// An HTTP answer: status and body.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Why no answer came; `retryable` when the endpoint may answer later.
pub struct Failure {
    pub message: String,
    pub retryable: bool,
}

fn failed(message: String, retryable: bool) -> Failure {
    Failure { message, retryable }
}

/// What an error code means to an operator.
fn explain(endpoint: &Endpoint, code: &ErrorCode) -> Failure {
    let at = &endpoint.authority;
    match code {
        ErrorCode::HttpRequestDenied => failed(
            format!(
                "the host refused a request to {at}: grant the endpoint in the provider's `http` list"
            ),
            false,
        ),
        ErrorCode::ConnectionRefused => failed(format!("{at} refused the connection"), true),
        ErrorCode::ConnectionTimeout | ErrorCode::ConnectionReadTimeout => {
            failed(format!("{at} did not answer in time"), true)
        }
        ErrorCode::HttpResponseBodySize(_) => {
            failed(format!("{at} answered more than the host accepts"), false)
        }
        other => failed(format!("request to {at} failed: {other:?}"), true),
    }
}

/// POSTs `body` to `/` of `endpoint` with `headers`.
pub fn post(
    endpoint: &Endpoint,
    headers: &[(&str, String)],
    body: &[u8],
) -> Result<Answer, Failure> {
    let internal = |what: &str| failed(format!("cannot build the request: {what}"), false);
    let fields = Fields::new();
    for (name, value) in headers {
        fields
            .append(name, value.as_bytes())
            .map_err(|_| internal(name))?;
    }
    let request = OutgoingRequest::new(fields);
    let scheme = if endpoint.https {
        Scheme::Https
    } else {
        Scheme::Http
    };
    request
        .set_method(&Method::Post)
        .map_err(|_| internal("method"))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|_| internal("scheme"))?;
    request
        .set_authority(Some(&endpoint.authority))
        .map_err(|_| internal("authority"))?;
    request
        .set_path_with_query(Some("/"))
        .map_err(|_| internal("path"))?;
    let out = request.body().map_err(|_| internal("body"))?;
    let pending = outgoing_handler::handle(request, None).map_err(|e| explain(endpoint, &e))?;
    // A refused request fails the body's stream too; the response then says why.
    if write_body(&out, body).is_ok() {
        OutgoingBody::finish(out, None).map_err(|e| explain(endpoint, &e))?;
    }
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(explain(endpoint, &code)),
        _ => return Err(internal("response")),
    };
    let status = response.status();
    let incoming = response.consume().map_err(|_| internal("response body"))?;
    let body = read_body(endpoint, &incoming)?;
    Ok(Answer { status, body })
}

fn write_body(out: &OutgoingBody, body: &[u8]) -> Result<(), StreamError> {
    let stream = out.write().map_err(|()| StreamError::Closed)?;
    for chunk in body.chunks(WRITE_CHUNK) {
        stream.blocking_write_and_flush(chunk)?;
    }
    Ok(())
}

fn read_body(
    endpoint: &Endpoint,
    incoming: &wasip2::http::types::IncomingBody,
) -> Result<Vec<u8>, Failure> {
    let stream = incoming
        .stream()
        .map_err(|()| failed("no response body".into(), true))?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 << 10) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok(bytes),
            Err(StreamError::LastOperationFailed(e)) => {
                let code = wasip2::http::types::http_error_code(&e);
                return Err(match code {
                    Some(code) => explain(endpoint, &code),
                    None => failed(
                        format!(
                            "reading the answer of {}: {}",
                            endpoint.authority,
                            e.to_debug_string()
                        ),
                        true,
                    ),
                });
            }
        }
        if bytes.len() > MAX_ANSWER_BYTES {
            return Err(failed(
                format!(
                    "{} answered more than {MAX_ANSWER_BYTES} bytes",
                    endpoint.authority
                ),
                false,
            ));
        }
    }
}
