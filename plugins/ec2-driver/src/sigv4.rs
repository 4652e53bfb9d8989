//! AWS Signature Version 4 for a form-encoded `POST /` (the EC2 Query API): the canonical
//! request, the string to sign, the derived key and the `Authorization` header.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The key pair a request is signed with.
pub struct Credentials<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    /// Temporary credentials carry a session token, sent as `x-amz-security-token`.
    pub session_token: Option<&'a str>,
}

/// A UTC time as SigV4 writes it: `20150830T123600Z`.
pub struct AmzDate(pub String);

impl AmzDate {
    /// The time `secs` seconds after the Unix epoch.
    pub fn from_unix(secs: u64) -> AmzDate {
        let (days, rest) = (secs / 86_400, secs % 86_400);
        let (y, m, d) = civil_from_days(days as i64);
        AmzDate(format!(
            "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
            rest / 3600,
            rest / 60 % 60,
            rest % 60
        ))
    }

    fn day(&self) -> &str {
        &self.0[..8]
    }
}

/// Year, month and day of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The key a day's requests to `service` in `region` are signed with.
fn signing_key(secret: &str, day: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), day);
    let k_region = hmac(&k_date, region);
    let k_service = hmac(&k_region, service);
    hmac(&k_service, "aws4_request")
}

/// The headers to send with a `POST /` of `body` to `host` (as the `Host` header will carry
/// it), signed for `service` in `region` at `date`: `content-type`, `x-amz-date`, perhaps
/// `x-amz-security-token`, and `authorization`.
pub fn sign(
    creds: &Credentials<'_>,
    region: &str,
    service: &str,
    host: &str,
    date: &AmzDate,
    body: &str,
) -> Vec<(&'static str, String)> {
    let mut headers: Vec<(&'static str, String)> = vec![
        (
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8".into(),
        ),
        ("host", host.to_owned()),
        ("x-amz-date", date.0.clone()),
    ];
    if let Some(token) = creds.session_token {
        headers.push(("x-amz-security-token", token.to_owned()));
    }
    let signed: Vec<&str> = headers.iter().map(|(k, _)| *k).collect();
    let signed = signed.join(";");
    let canonical_headers: String = headers
        .iter()
        .map(|(k, v)| format!("{k}:{}\n", v.trim()))
        .collect();
    let payload = hex(&Sha256::digest(body.as_bytes()));
    let canonical = format!("POST\n/\n\n{canonical_headers}\n{signed}\n{payload}");
    let scope = format!("{}/{region}/{service}/aws4_request", date.day());
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
        date.0,
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let key = signing_key(creds.secret_access_key, date.day(), region, service);
    let signature = hex(&hmac(&key, &to_sign));
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
        creds.access_key_id
    );
    // The host sets `Host` itself (a guest may not); the rest go as signed.
    headers.retain(|(k, _)| *k != "host");
    headers.push(("authorization", authorization));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_written_as_sigv4_wants() {
        assert_eq!(AmzDate::from_unix(0).0, "19700101T000000Z");
        assert_eq!(AmzDate::from_unix(1_440_938_160).0, "20150830T123600Z");
        assert_eq!(AmzDate::from_unix(951_782_400).0, "20000229T000000Z");
    }

    /// AWS's documented example of a derived signing key (IAM, us-east-1, 2015-08-30).
    #[test]
    fn the_signing_key_matches_the_documented_example() {
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let k = signing_key(secret, "20150830", "us-east-1", "iam");
        assert_eq!(
            hex(&k),
            "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
        );
    }
}
