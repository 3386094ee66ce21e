//! Reading request bodies into memory, under three limits: the size of one body
//! ([`Limits::max_request_body`], 413), the time to receive it
//! ([`Limits::body_read_timeout`], 408) and the bytes buffered across the whole server
//! ([`Limits::max_buffered_bodies`], 503), so that anonymous clients cannot pin memory
//! before a hook has looked at their requests.

use std::sync::Arc;

use axum::response::IntoResponse;
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, StatusCode, header};
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{Limits, Request, Response};

/// The server-wide budget of buffered request bodies, in bytes.
#[derive(Debug)]
pub(crate) struct BodyBudget {
    bytes: Arc<Semaphore>,
}

impl BodyBudget {
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            bytes: Arc::new(Semaphore::new(
                limits.max_buffered_bodies.min(Semaphore::MAX_PERMITS),
            )),
        }
    }

    /// Reserves `bytes` at once, or fails if they do not fit now.
    fn reserve(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let bytes = u32::try_from(bytes).ok()?;
        Arc::clone(&self.bytes).try_acquire_many_owned(bytes).ok()
    }
}

/// A buffered body's share of the budget, carried in the request's extensions so that it
/// is given back when the request (and every clone of it) is dropped.
#[derive(Clone, Debug)]
struct Reserved {
    _permit: Arc<OwnedSemaphorePermit>,
}

/// Reads `request`'s body into memory.
///
/// - A declared `Content-Length` over the limit answers 413 before a byte is read.
/// - The declared length is reserved from the budget before reading (a chunked body
///   reserves as its bytes arrive); what does not fit answers 503.
/// - A body not received within the body timeout answers 408.
pub(super) async fn buffer(
    request: axum::extract::Request,
    limits: &Limits,
    budget: &BodyBudget,
) -> Result<Request, Response> {
    let (mut parts, mut body) = request.into_parts();
    if body.is_end_stream() {
        return Ok(Request::from(http::Request::from_parts(
            parts,
            Bytes::new(),
        )));
    }
    let limit = limits.max_request_body;
    let declared = usize::try_from(body.size_hint().lower()).unwrap_or(usize::MAX);
    if declared > limit {
        return Err(too_large(limit));
    }
    let mut reserved = if declared > 0 {
        match budget.reserve(declared) {
            Some(permit) => Some(permit),
            None => return Err(busy()),
        }
    } else {
        None
    };
    let read = async {
        // One chunk (the usual case) is kept as it came; more are copied together.
        let mut first: Option<Bytes> = None;
        let mut joined = BytesMut::new();
        let mut received = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| {
                (
                    StatusCode::BAD_REQUEST,
                    format!("Cannot read the request body: {error}"),
                )
                    .into_response()
            })?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            received += data.len();
            if received > limit {
                return Err(too_large(limit));
            }
            // Beyond what was declared (a chunked body): reserve as the bytes arrive.
            let held = reserved.as_ref().map_or(0, |permit| permit.num_permits());
            if received > held {
                let more = budget.reserve(received - held).ok_or_else(busy)?;
                match &mut reserved {
                    Some(permit) => permit.merge(more),
                    None => reserved = Some(more),
                }
            }
            match first.take() {
                None if joined.is_empty() => first = Some(data),
                None => joined.extend_from_slice(&data),
                Some(previous) => {
                    joined.reserve(declared.max(previous.len() + data.len()));
                    joined.extend_from_slice(&previous);
                    joined.extend_from_slice(&data);
                }
            }
        }
        Ok(first.unwrap_or_else(|| joined.freeze()))
    };
    let bytes = match tokio::time::timeout(limits.body_read_timeout, read).await {
        Ok(read) => read?,
        Err(_) => {
            let timeout = limits.body_read_timeout;
            return Err(closing(
                StatusCode::REQUEST_TIMEOUT,
                format!("The request body was not received within {timeout:?}"),
            ));
        }
    };
    if let Some(mut permit) = reserved.filter(|_| !bytes.is_empty()) {
        // A body shorter than declared gives back the difference at once.
        let surplus = permit.num_permits().saturating_sub(bytes.len());
        drop(permit.split(surplus));
        parts.extensions.insert(Reserved {
            _permit: Arc::new(permit),
        });
    }
    Ok(Request::from(http::Request::from_parts(parts, bytes)))
}

fn too_large(limit: usize) -> Response {
    closing(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("Request body is larger than {limit} bytes"),
    )
}

fn busy() -> Response {
    let mut response = closing(
        StatusCode::SERVICE_UNAVAILABLE,
        "The server is receiving too many request bodies at once; retry later".to_owned(),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// An error answered before the body was read to its end: the connection cannot carry
/// another request, so the response says it closes.
fn closing(status: StatusCode, message: String) -> Response {
    let mut response = (status, message).into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
