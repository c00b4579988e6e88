//! The fleet as an operator sees it: the machine list, its live stream, and Quick View.

use std::time::Duration;

use natter_actors::directory;
use natter_actors::machines::{MachineReply, MachineRequest};
use natter_actors::protocol::valid_machine_id;
use natter_actors::subjects;
use warp::http::StatusCode;
use warp::reply::Response;

use super::json_reply;
use super::models::MachineListQuery;
use crate::auth::Login;
use crate::error::ApiError;
use crate::limits::StreamOwner;
use crate::metrics::StreamKind;
use crate::presence::PresenceEntry;
use crate::{Gateway, sse};

/// How long Quick View waits for the agent actor's live record.
const DETAILS_TIMEOUT: Duration = Duration::from_secs(2);

/// Checks a Machine ID / Group ID filter: a machine-ID-like pattern that may contain `*`.
fn checked_filter(filter: Option<String>) -> Result<String, ApiError> {
    let f = filter.unwrap_or_default().trim().to_ascii_lowercase();
    let ok = f.len() <= 253
        && f.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_' | b'*')
        });
    if ok {
        Ok(f)
    } else {
        Err(ApiError::bad_request(
            "a filter is a machine or group ID, with * as a wildcard (like *.sales.*)",
        ))
    }
}

/// Rows a page has unless the client says otherwise.
pub const DEFAULT_PAGE: usize = 200;
/// Rows a page has at most.
pub const MAX_PAGE: usize = 2000;

/// A page of the list: `offset` (from 0) and `limit` (1 … [`MAX_PAGE`]), or `None` when the
/// client asks for neither (the whole list, as before paging).
fn checked_page(
    offset: Option<String>,
    limit: Option<String>,
) -> Result<Option<(usize, usize)>, ApiError> {
    if offset.is_none() && limit.is_none() {
        return Ok(None);
    }
    let offset = match offset {
        None => 0,
        Some(o) => {
            o.parse::<u32>()
                .map_err(|_| ApiError::bad_request("offset: a number from 0"))? as usize
        }
    };
    let limit = match limit {
        None => DEFAULT_PAGE,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limit: a number from 1 to {MAX_PAGE}"
                )));
            }
        },
    };
    Ok(Some((offset, limit)))
}

/// GET /api/machines?filter=&offset=&limit=
pub async fn list(l: Login, gw: Gateway, q: MachineListQuery) -> Result<Response, ApiError> {
    let filter = checked_filter(q.filter)?;
    let dir = gw.directory();
    Ok(match checked_page(q.offset, q.limit)? {
        Some((offset, limit)) => {
            json_reply(StatusCode::OK, &dir.page(&l.scope, &filter, offset, limit))
        }
        None => json_reply(StatusCode::OK, &dir.list(&l.scope, &filter)),
    })
}

/// GET /api/machines/events?filter=&offset=&limit=
pub async fn events(l: Login, gw: Gateway, q: MachineListQuery) -> Result<Response, ApiError> {
    let filter = checked_filter(q.filter)?;
    let page = checked_page(q.offset, q.limit)?;
    let slot = gw.limits().open_stream(&l.key, StreamOwner::Operator)?;
    // Options only decide where the operator is listed: without them (NATS slow), listed.
    let options = directory::get_options(&gw.stores().operator_options, &l.who.id)
        .await
        .unwrap_or_default();
    let present = gw.presence().enter(PresenceEntry {
        username: l.who.id.clone(),
        name: l.who.name.clone(),
        scope: l.scope.clone(),
        hide_from_operators: options.hide_from_operators,
        hide_from_machine_users: options.hide_from_machine_users,
    });
    let stream = sse::machine_stream(&gw, l.scope, filter, page, present).holding(slot);
    Ok(sse::response(stream, &gw, StreamKind::Machines))
}

/// GET /api/machines/{id}: Quick View, the machine's live record from its agent actor (the
/// directory's copy if the actor does not answer in time).
pub async fn details(id: String, l: Login, gw: Gateway) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found(format!("no machine {id}"));
    if !valid_machine_id(&id) || !l.scope.covers(&id) {
        return Err(not_found());
    }
    let known = gw.directory().record(&id);
    let body = serde_json::to_vec(&MachineRequest::View).unwrap_or_default();
    // Retried while the machine's partition changes hands, all within DETAILS_TIMEOUT.
    let live = tokio::time::timeout(
        DETAILS_TIMEOUT,
        natter_actors::partitions::request_owner::<MachineReply>(
            &gw.stores().client,
            subjects::machine_request(&id),
            body.into(),
            DETAILS_TIMEOUT,
            natter_actors::partitions::machine_moved,
        ),
    )
    .await;
    let record = match live {
        Ok(Ok((reply, _))) => reply.ok(),
        _ => None,
    }
    .or(known)
    .ok_or_else(not_found)?;
    Ok(json_reply(StatusCode::OK, &gw.directory().view(&record)))
}
