//! API errors: one type for every handler, written in OpenAI's JSON error shape
//! (`{"error": {"message", "type", "param", "code"}}`) or Ollama's (`{"error": "..."}`),
//! with the status code each client library maps to its documented exception.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Which wire format an error is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Ollama,
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type`: invalid_request_error, authentication_error, ...
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds a client should wait before retrying (sent as `Retry-After`).
    pub retry_after: Option<u64>,
    pub dialect: Dialect,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
            dialect: Dialect::OpenAi,
        }
    }

    /// A request the client must fix; `param` names the field at fault.
    pub fn bad_request(param: &str, message: impl Into<String>) -> Self {
        let mut e = ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message);
        if !param.is_empty() {
            e.param = Some(param.to_string());
        }
        e
    }

    pub fn context_exceeded(n_prompt: usize, n_ctx: usize) -> Self {
        let mut e = ApiError::bad_request(
            "messages",
            format!(
                "the prompt is {n_prompt} tokens long but the model's context holds {n_ctx} tokens; shorten it or ask for a larger context"
            ),
        );
        e.code = Some("context_length_exceeded");
        e
    }

    pub fn unauthorized() -> Self {
        let mut e = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "missing or invalid API key: send it as 'Authorization: Bearer KEY'",
        );
        e.code = Some("invalid_api_key");
        e
    }

    pub fn model_not_found(name: &str, known: &[String]) -> Self {
        let mut e = ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!(
                "model '{name}' does not exist (served: {})",
                known.join(", ")
            ),
        );
        e.param = Some("model".into());
        e.code = Some("model_not_found");
        e
    }

    pub fn busy(message: impl Into<String>, retry_after: u64) -> Self {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_busy", message);
        e.retry_after = Some(retry_after);
        e.code = Some("server_busy");
        e
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            message,
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    pub fn ollama(mut self) -> Self {
        self.dialect = Dialect::Ollama;
        self
    }

    /// The JSON body alone (for an error inside a stream).
    pub fn body(&self) -> serde_json::Value {
        match self.dialect {
            Dialect::OpenAi => json!({"error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }}),
            Dialect::Ollama => json!({"error": self.message}),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}
