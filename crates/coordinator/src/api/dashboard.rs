//! The web dashboard: `GET /` and `GET /ui/{file}` serve a small page (plain HTML, CSS and
//! JavaScript, embedded in the binary, so it works offline) that drives the API with the user's
//! token: the task list live over SSE, a task's detail, a submit form, counts and health.
//!
//! The page needs no token itself (it holds no data); every API call it makes sends one. Each
//! answer carries a strict Content-Security-Policy (only this origin's script, style and
//! connections; no inline script, no frames), `nosniff`, and `Cache-Control: no-cache` with an
//! `ETag`, so a browser revalidates and an upgraded coordinator's page is never stale.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// The page's policy: its own script, style and API only; `data:` images for the empty favicon
/// (so the browser asks for no `/favicon.ico`); nothing framed, no forms posted anywhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One embedded file of the page.
struct Asset {
    /// Its name under `/ui/` (`index.html` is served at `/`).
    name: &'static str,
    /// Its `Content-Type`.
    content_type: &'static str,
    /// Its bytes.
    body: &'static str,
}

/// The page's files, embedded at build time.
const ASSETS: [Asset; 4] = [
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../../assets/dashboard/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../assets/dashboard/app.js"),
    },
    Asset {
        name: "forms.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../assets/dashboard/forms.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../assets/dashboard/app.css"),
    },
];

/// Each asset's strong `ETag` (a quoted prefix of its SHA-256), in [`ASSETS`] order; computed
/// once.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let digest = hex::encode(Sha256::digest(asset.body.as_bytes()));
            // A quoted hex string is always a valid header value.
            HeaderValue::from_str(&format!("\"{}\"", &digest[..32]))
                .unwrap_or(HeaderValue::from_static("\"0\""))
        })
        .collect()
});

/// The dashboard's routes (no token needed: the page asks the user for one).
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|headers: HeaderMap| async move { serve("index.html", &headers) }))
        .route(
            "/ui/{file}",
            get(|Path(file): Path<String>, headers: HeaderMap| async move {
                serve(&file, &headers)
            }),
        )
}

/// The asset `name` with its headers; 304 when `If-None-Match` names its current `ETag`, 404
/// for a name that is none of the page's files.
fn serve(name: &str, request: &HeaderMap) -> Response {
    let Some(index) = ASSETS.iter().position(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "no such dashboard file\n").into_response();
    };
    let (asset, etag) = (&ASSETS[index], ETAGS[index].clone());
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|t| t.trim() == "*" || t.trim().as_bytes() == etag.as_bytes())
        });
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, etag),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (headers, asset.body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_of(response: &Response, name: header::HeaderName) -> &str {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    #[test]
    fn each_file_has_its_type_a_policy_and_a_revalidated_cache() {
        for (name, kind) in [
            ("index.html", "text/html"),
            ("app.js", "text/javascript"),
            ("forms.js", "text/javascript"),
            ("app.css", "text/css"),
        ] {
            let response = serve(name, &HeaderMap::new());
            assert_eq!(response.status(), StatusCode::OK, "{name}");
            assert!(
                header_of(&response, header::CONTENT_TYPE).starts_with(kind),
                "{name}"
            );
            assert_eq!(header_of(&response, header::CACHE_CONTROL), "no-cache");
            let csp = header_of(&response, header::CONTENT_SECURITY_POLICY);
            assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
            assert!(!csp.contains("unsafe"), "{csp}");
            assert_eq!(
                header_of(&response, header::X_CONTENT_TYPE_OPTIONS),
                "nosniff"
            );
        }
        assert_eq!(
            serve("../Cargo.toml", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn a_current_etag_is_answered_304_and_a_stale_one_gets_the_file() {
        let first = serve("app.js", &HeaderMap::new());
        let etag = first.headers()[header::ETAG].clone();
        assert_ne!(
            etag,
            serve("app.css", &HeaderMap::new()).headers()[header::ETAG]
        );
        let mut asking = HeaderMap::new();
        asking.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(serve("app.js", &asking).status(), StatusCode::NOT_MODIFIED);
        asking.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"stale\""));
        assert_eq!(serve("app.js", &asking).status(), StatusCode::OK);
    }

    #[test]
    fn the_page_loads_only_its_own_files_and_no_inline_script() {
        let html = ASSETS[0].body;
        assert!(html.contains(r#"<script src="/ui/app.js" defer></script>"#));
        assert!(html.contains(r#"<script src="/ui/forms.js" defer></script>"#));
        assert!(html.contains(r#"href="/ui/app.css""#));
        assert!(!html.contains("<script>") && !html.contains(" style=") && !html.contains("http"));
        assert!(
            !ASSETS[1].body.contains("innerHTML"),
            "text is set as text, never as HTML"
        );
    }
}
