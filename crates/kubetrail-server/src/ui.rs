//! The web UI: the files under `ui/` at the repository root, embedded in the binary (debug
//! builds read them from disk, so editing the UI needs no recompile). `/ui/…` serves them;
//! every other GET outside the API answers the page itself, whose script routes by path, so a
//! link such as `/explore?q=…&from=…` (the one monitors put in notifications) opens that view.
//!
//! The page holds no secret and needs no token; the data comes from `/api/v1` with the token
//! the user types, kept in the tab's session storage. Responses carry a strict
//! Content-Security-Policy (scripts and styles from this origin only, no inline script, no
//! framing): audit events are attacker-controlled text, and the UI renders them as text.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rust_embed::Embed;

#[derive(Embed)]
#[folder = "../../ui/"]
struct Assets;

/// The policy of every UI response: nothing but this origin, no inline code, no framing.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `GET /ui/{*path}`: one asset.
pub(crate) async fn asset(
    axum::extract::Path(path): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    serve(&path, &headers)
}

/// Any other GET: the page, for the UI's own routes; 404 for API paths nobody serves.
pub(crate) async fn page(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    if (method != Method::GET && method != Method::HEAD)
        || path.starts_with("/api/")
        || path.starts_with("/ui/")
    {
        return crate::api::ApiError::new(
            StatusCode::NOT_FOUND,
            format!("nothing is served at {method} {path}"),
        )
        .into_response();
    }
    serve("index.html", &headers)
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else {
        return (StatusCode::NOT_FOUND, secured(), "no such file\n").into_response();
    };
    let etag = format!(
        "\"{}\"",
        file.metadata
            .sha256_hash()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        Response::new(Body::from(file.data.into_owned()))
    };
    let out = response.headers_mut();
    out.extend(secured());
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    // Revalidated every time (a 304 when unchanged), so an upgrade is never half cached.
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, etag);
    }
    response
}

/// The security headers of every UI response.
fn secured() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "json" => "application/json",
        "png" => "image/png",
        // The vendored libraries' READMEs, licenses and checksums.
        _ => "text/plain; charset=utf-8",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vendored libraries are the files their list names, byte for byte.
    #[test]
    fn vendored_files_match_their_checksums() {
        use sha2::Digest;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ui/vendor");
        let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
        let mut checked = 0;
        for line in sums.lines().filter(|l| !l.trim().is_empty()) {
            let (sum, name) = line.split_once("  ").unwrap();
            let bytes = std::fs::read(dir.join(name)).unwrap();
            let actual: String = sha2::Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(actual, sum, "ui/vendor/{name} differs from SHA256SUMS");
            assert!(
                Assets::get(&format!("vendor/{name}")).is_some(),
                "{name} is embedded"
            );
            checked += 1;
        }
        assert_eq!(checked, 3);
    }

    #[test]
    fn the_page_loads_no_inline_script_or_style() {
        let page = Assets::get("index.html").unwrap();
        let page = std::str::from_utf8(&page.data).unwrap();
        for script in page.split("<script").skip(1) {
            let tag = &script[..script.find('>').unwrap()];
            assert!(
                tag.contains("src=\"/ui/"),
                "inline script in index.html: {tag}"
            );
        }
        assert!(!page.contains("style="), "inline style in index.html");
    }
}
