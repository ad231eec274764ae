//! JSON in and out of handlers, with rejections in Pyroscope's `{"errors":[…]}` shape.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::core::jws::Object;
use crate::edge::error::ApiError;

/// `Json<T>` whose rejections use the `{"errors":[…]}` shape. Only a JSON object is accepted:
/// serde's derive would also fill a struct from an array, in field order.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<Object<T>>::from_request(req, state).await {
            Ok(axum::Json(Object(v))) => Ok(JsonBody(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::bad_request(
                "expected a JSON body with Content-Type: application/json",
            )),
            Err(JsonRejection::JsonSyntaxError(_)) => {
                Err(ApiError::bad_request("request body is not valid JSON"))
            }
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::bad_request(format!(
                "invalid request body: {}",
                e.body_text().trim_start_matches(
                    "Failed to deserialize the JSON body into the target type: "
                )
            ))),
            Err(other) => Err(ApiError::bad_request(other.body_text())),
        }
    }
}

/// Serializes a JSON body for API responses.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    (status, Json(body)).into_response()
}
