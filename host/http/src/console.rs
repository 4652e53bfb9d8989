//! The web console: static assets compiled into the binary (no CDN, no build step), served at
//! `/` and `/console/*` under a Content-Security-Policy that allows only this origin's files,
//! so no inline or injected script can run even if some data slipped through as markup.

use crate::problem::Problem;
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Scripts, styles, images and connections from this origin only; nothing may frame the page,
/// and forms submit nowhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'; object-src 'none'";

/// Browsers revalidate every time (the ETag makes that a 304): a new binary serves new assets
/// under the same names.
pub const CACHE_CONTROL: &str = "no-cache";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// Content hash, computed at compile time.
    etag: u64,
}

const fn asset(name: &'static str, content_type: &'static str, body: &'static [u8]) -> Asset {
    Asset {
        name,
        content_type,
        body,
        etag: fnv1a(body),
    }
}

/// FNV-1a, enough to tell two versions of a file apart for caching.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

const INDEX: Asset = asset(
    "index.html",
    "text/html; charset=utf-8",
    include_bytes!("../console/index.html"),
);

/// What `/console/{name}` serves.
const ASSETS: [Asset; 3] = [
    asset(
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../console/console.js"),
    ),
    asset(
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("../console/console.css"),
    ),
    asset(
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../console/favicon.svg"),
    ),
];

/// `/` and `/console/{name}`; no token needed, since the files hold no data (the page asks
/// for the token and sends it with every API call).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/console/{name}", get(console_file))
}

async fn index(headers: HeaderMap) -> Response {
    serve(&INDEX, &headers)
}

async fn console_file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => serve(asset, &headers),
        None => Problem::not_found(format!("no console file named {name:?}")).into_response(),
    }
}

/// The asset with its headers, or 304 when the browser already holds this version.
fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", asset.etag);
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.body.into_response()
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(asset: &Asset) -> &'static str {
        std::str::from_utf8(asset.body).expect("utf-8 asset")
    }

    #[test]
    fn every_file_the_page_names_is_embedded() {
        let html = text(&INDEX);
        for name in ["console.js", "console.css", "favicon.svg"] {
            assert!(html.contains(&format!("/console/{name}")), "{name}");
            assert!(ASSETS.iter().any(|a| a.name == name), "{name}");
        }
    }

    #[test]
    fn the_page_has_no_inline_script_style_or_handler_the_policy_would_block() {
        let html = text(&INDEX).to_ascii_lowercase();
        for tag in html.split("<script").skip(1) {
            let open = tag.split('>').next().unwrap_or_default();
            assert!(open.contains("src="), "inline script: <script{open}>");
        }
        assert!(!html.contains("<style"), "inline style element");
        for tag in html.split('<').skip(1) {
            let open = tag.split('>').next().unwrap_or_default();
            for attr in open.split_whitespace().skip(1) {
                assert!(!attr.starts_with("style="), "inline style: <{open}>");
                assert!(
                    !(attr.starts_with("on") && attr.contains('=')),
                    "inline handler: <{open}>"
                );
            }
        }
        assert!(!html.contains("://"), "an outside URL");
    }

    #[test]
    fn the_script_never_turns_data_into_markup() {
        let js = text(&ASSETS[0]);
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "createContextualFragment",
        ] {
            assert!(!js.contains(sink), "console.js uses {sink}");
        }
        assert!(
            !js.replace(SVG_NAMESPACE, "").contains("://"),
            "console.js names an outside URL"
        );
    }

    /// The one outside URL the script may name: the SVG namespace, which is not fetched.
    const SVG_NAMESPACE: &str = "http://www.w3.org/2000/svg";

    #[test]
    fn assets_carry_type_policy_and_cache_headers() {
        let r = serve(&ASSETS[0], &HeaderMap::new());
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
        assert!(CONTENT_SECURITY_POLICY.starts_with("default-src 'self'"));
        assert_eq!(h[header::CACHE_CONTROL], CACHE_CONTROL);
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let html = serve(&INDEX, &HeaderMap::new());
        assert_eq!(
            html.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
    }

    #[test]
    fn a_matching_etag_is_answered_not_modified_and_another_gets_the_file() {
        let etag = serve(&INDEX, &HeaderMap::new()).headers()[header::ETAG].clone();
        let mut req = HeaderMap::new();
        req.insert(header::IF_NONE_MATCH, etag.clone());
        let r = serve(&INDEX, &req);
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(r.headers()[header::ETAG], etag);
        req.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"0\""));
        assert_eq!(serve(&INDEX, &req).status(), StatusCode::OK);
    }

    #[test]
    fn different_files_have_different_etags() {
        let mut tags: Vec<u64> = ASSETS.iter().map(|a| a.etag).collect();
        tags.push(INDEX.etag);
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len() + 1);
    }
}
