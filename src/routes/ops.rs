//! What operators and load balancers call: liveness, readiness (which
//! component is down) and the Prometheus metrics.

use crate::broker::Health;
use crate::db;
use crate::hub::Counts;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde_json::json;
use std::time::Duration;

pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let postgres = async {
        let mut conn = state.pool.get().await.map_err(|e| e.to_string())?;
        db::ping(&mut conn).await.map_err(|e| e.to_string())
    };
    let postgres = match tokio::time::timeout(Duration::from_secs(2), postgres).await {
        Ok(Ok(())) => "up".to_string(),
        Ok(Err(e)) => format!("down: {e}"),
        Err(_) => "down: timed out".to_string(),
    };
    let broker = match state.broker.health() {
        Health::Up => "up".to_string(),
        Health::Down(why) => format!("down: {why}"),
    };
    let mut components = serde_json::Map::new();
    components.insert("postgres".into(), postgres.into());
    components.insert(state.broker.name().into(), broker.into());
    // Each configured bus stream, e.g. "redis_streams:orders".
    for (name, down) in state.sources.health.snapshot() {
        let status = down.map_or_else(|| "up".to_string(), |why| format!("down: {why}"));
        components.insert(name, status.into());
    }
    let ok = components.values().all(|s| s == "up");
    let body = json!({
        "status": if ok { "ready" } else { "unavailable" },
        "instance": state.instance,
        "components": components,
    });
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// `GET /metrics` (404 when turned off with `PULSEHUB_METRICS=false`).
/// Gauges that are a state are read now; counters live in [`crate::metrics`].
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    if !state.config.metrics {
        return HttpResponse::NotFound().finish();
    }
    let m = &state.metrics;
    if let Ok(c) = state.hub.send(Counts).await {
        m.sessions.set(c.sessions as i64);
        m.subscriptions.set(c.subscriptions as i64);
    }
    m.broker_up
        .set(i64::from(state.broker.health() == Health::Up));
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(m.render())
}
