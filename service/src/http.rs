//! The metrics listeners' answers, written the same way by every binary:
//! one exposition format (OpenMetrics text) and plain-text probes.

/// `/healthz`, `/readyz`, errors.
pub const TEXT: &str = "text/plain; charset=utf-8";
/// `/metrics` (prometheus-client writes OpenMetrics text).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Answer `request` with `body`.
pub fn respond(request: tiny_http::Request, status: u16, content_type: &str, body: Vec<u8>) {
    let header = tiny_http::Header::from_bytes("Content-Type", content_type).expect("valid header");
    let response = tiny_http::Response::from_data(body)
        .with_status_code(status)
        .with_header(header);
    let _ = request.respond(response);
}
