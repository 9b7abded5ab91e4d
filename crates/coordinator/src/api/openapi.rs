//! The API's OpenAPI 3.1 document, derived from the handlers' `#[utoipa::path]` and the types
//! they take and answer; served at `GET /openapi.json` (no token: it describes the API and holds
//! no task) and committed as `docs/openapi.json` (`coordinator openapi` prints it).

use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::LazyLock;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

/// The document's root: every route, and the schemas no route names directly.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "wasm-exec coordinator",
        description = "Runs WebAssembly tasks under hard limits: submit, follow, cancel, read \
            results and signed receipts, upload modules. Every route but the probes and this \
            document needs `Authorization: Bearer <token>` when the operator set tokens \
            (COORDINATOR_API_TOKEN, COORDINATOR_TOKENS_FILE); a tenant sees only its own tasks.",
    ),
    paths(
        super::submit::submit_task,
        super::batch::submit_batch,
        super::read::list_tasks,
        super::read::get_task,
        super::read::get_result,
        super::receipt::get_receipt,
        super::control::cancel_task,
        super::control::events,
        super::modules::upload,
        super::modules::info,
        super::metrics,
        super::healthz,
        super::readyz,
        openapi_json,
    ),
    components(schemas(crate::state::TaskEvent)),
    modifiers(&BearerToken),
    tags(
        (name = "tasks", description = "Submit, read and cancel tasks."),
        (name = "events", description = "Follow task changes without polling."),
        (name = "modules", description = "Upload modules and read their metadata."),
        (name = "operations", description = "Probes, metrics and this document."),
    ),
)]
struct ApiDoc;

/// Adds the `bearer` security scheme the protected routes name.
struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The document as pretty JSON with a final newline: what `GET /openapi.json` answers and
/// `docs/openapi.json` holds.
pub fn document_json() -> String {
    // A document of plain strings, maps and numbers always serialises.
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"serialising the OpenAPI document: {e}\"}}"));
    text.push('\n');
    text
}

/// This OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document.", content_type = "application/json", body = Object)))]
pub(super) async fn openapi_json() -> Response {
    static DOCUMENT: LazyLock<String> = LazyLock::new(document_json);
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_names_every_route_and_its_errors() {
        let doc: serde_json::Value = serde_json::from_str(&document_json()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        for (path, method) in [
            ("/v1/tasks", "post"),
            ("/v1/tasks", "get"),
            ("/v1/tasks:batch", "post"),
            ("/v1/tasks/{id}", "get"),
            ("/v1/tasks/{id}/result", "get"),
            ("/v1/tasks/{id}/receipt", "get"),
            ("/v1/tasks/{id}/cancel", "post"),
            ("/v1/events", "get"),
            ("/v1/modules", "post"),
            ("/v1/modules/{cid}", "get"),
            ("/metrics", "get"),
            ("/healthz", "get"),
            ("/readyz", "get"),
            ("/openapi.json", "get"),
        ] {
            assert!(
                doc["paths"][path][method].is_object(),
                "{method} {path} missing"
            );
        }
        let error = &doc["paths"]["/v1/tasks"]["post"]["responses"]["400"];
        let schema = &error["content"]["application/json"]["schema"]["$ref"];
        assert_eq!(schema, "#/components/schemas/ErrorBody", "{error}");
    }
}
