//! `POST /v1/modules` (upload a module: binary Wasm or WAT text) and `GET /v1/modules/{cid}`
//! (its metadata). The body cap is the module cap (`COORDINATOR_MAX_MODULE_MB`), not the JSON
//! body cap, so these routes carry their own limit.

use super::{Api, ApiError};
use crate::module::uploads::UploadError;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

/// The upload routes, with the module cap as their body limit (`max_bytes`).
pub(super) fn routes(max_bytes: usize) -> Router<Api> {
    Router::new()
        .route("/v1/modules", post(upload))
        .route("/v1/modules/{cid}", get(info))
        .layer(DefaultBodyLimit::max(max_bytes))
        .layer(middleware::from_fn_with_state(max_bytes, refuse_oversize))
}

/// A binary Wasm module, as the body of `POST /v1/modules`: its schema is bytes.
pub(super) struct WasmBinary;

impl utoipa::PartialSchema for WasmBinary {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl utoipa::ToSchema for WasmBinary {}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        Some("body"),
        format!("the module is over the {limit}-byte limit (COORDINATOR_MAX_MODULE_MB)"),
    )
    .with_kind("module_too_large")
}

/// 413 at once for an announced `Content-Length` over the cap, before the body is read.
async fn refuse_oversize(State(max): State<usize>, request: Request, next: Next) -> Response {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max as u64) {
        return too_large(max).into_response();
    }
    next.run(request).await
}

/// 415 unless the body is declared `application/wasm` (binary) or `text/wat` (text): neither is
/// a type a browser sends cross-site without a preflight, so no web page uploads through a
/// visitor's browser.
fn require_module_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    match declared.as_deref() {
        Some("application/wasm" | "text/wat") => Ok(()),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("Content-Type"),
            format!(
                "send the module as Content-Type: application/wasm (binary) or text/wat (text) \
                 (got {}); with curl: --data-binary @fib.wasm -H 'Content-Type: application/wasm'",
                other.unwrap_or("none")
            ),
        )),
    }
}

/// Uploads a module (binary Wasm or WAT text): validated, its CIDs computed as `ipfs add`
/// would, stored durably. The same module again answers 200 with the same metadata.
#[utoipa::path(post, path = "/v1/modules", tag = "modules",
    request_body(description = "The module, at most `COORDINATOR_MAX_MODULE_MB`.",
        content(
            (WasmBinary = "application/wasm"),
            (String = "text/wat"),
        )),
    responses(
        (status = 201, description = "Stored: its metadata.", body = crate::module::uploads::ModuleInfo),
        (status = 200, description = "Uploaded before: its metadata.", body = crate::module::uploads::ModuleInfo),
        (status = 400, description = "Not a valid module (`kind`: `bad_module`).", body = super::ErrorBody),
        (status = 401, description = "No or a wrong bearer token.", body = super::ErrorBody),
        (status = 413, description = "Over the module cap (`kind`: `module_too_large`).", body = super::ErrorBody),
        (status = 415, description = "Not declared `application/wasm` or `text/wat`.", body = super::ErrorBody),
        (status = 503, description = "This coordinator keeps no uploaded modules.", body = super::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn upload(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let uploads = api.uploads.clone().ok_or_else(uploads_off)?;
    require_module_type(&headers)?;
    let limit = usize::try_from(uploads.max_bytes()).unwrap_or(usize::MAX);
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(limit)
        } else {
            ApiError::new(e.status(), None, e.body_text())
        }
    })?;
    let now = crate::state::now_ms();
    let put = tokio::task::spawn_blocking(move || uploads.put(&body, now))
        .await
        .map_err(ApiError::internal)?;
    match put {
        Ok((info, fresh)) => {
            tracing::info!(cid = %info.cid_v1, bytes = info.size_bytes, fresh, "module uploaded");
            let status = if fresh {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, axum::Json(info)).into_response())
        }
        Err(UploadError::BadModule(message)) => {
            Err(ApiError::bad("body", message).with_kind("bad_module"))
        }
        Err(UploadError::TooLarge { .. }) => Err(too_large(limit)),
        Err(e @ UploadError::Io(_)) => Err(ApiError::internal(e)),
    }
}

/// An uploaded module's metadata.
#[utoipa::path(get, path = "/v1/modules/{cid}", tag = "modules",
    params(("cid" = String, Path, description = "Its CID, v1 or v0.")),
    responses(
        (status = 200, description = "Its metadata.", body = crate::module::uploads::ModuleInfo),
        (status = 401, description = "No or a wrong bearer token.", body = super::ErrorBody),
        (status = 404, description = "No uploaded module with that CID.", body = super::ErrorBody),
        (status = 503, description = "This coordinator keeps no uploaded modules.", body = super::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn info(
    State(api): State<Api>,
    Path(cid): Path<String>,
) -> Result<Response, ApiError> {
    let uploads = api.uploads.clone().ok_or_else(uploads_off)?;
    let found = {
        let cid = cid.clone();
        tokio::task::spawn_blocking(move || uploads.info(&cid))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?
    };
    match found {
        Some(info) => Ok(axum::Json(info).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            Some("cid"),
            format!("no uploaded module with CID \"{cid}\"; upload it with POST /v1/modules"),
        )),
    }
}

fn uploads_off() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        "this coordinator keeps no uploaded modules",
    )
}
