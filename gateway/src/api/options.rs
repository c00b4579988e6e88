//! The logged-in operator's options: `GET/PUT /api/me/options`.

use natter_actors::directory::{self, OperatorOptions};
use warp::http::StatusCode;
use warp::reply::Response;

use super::json_reply;
use crate::Gateway;
use crate::auth::Login;
use crate::error::ApiError;

/// GET /api/me/options
pub async fn get(l: Login, gw: Gateway) -> Result<Response, ApiError> {
    let options = directory::get_options(&gw.stores().operator_options, &l.who.id)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    Ok(json_reply(StatusCode::OK, &options))
}

/// PUT /api/me/options: replaces every option (a field left out is off).
pub async fn put(l: Login, gw: Gateway, body: OperatorOptions) -> Result<Response, ApiError> {
    directory::put_options(&gw.stores().operator_options, &l.who.id, &body)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    Ok(json_reply(StatusCode::OK, &body))
}
