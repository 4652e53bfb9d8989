//! The journal's events as Server-Sent Events: `id:` is the event's journal id, so a client
//! that reconnects with `Last-Event-ID` gets every later event once, in order.

use crate::ApiState;
use crate::problem::Problem;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;
use stratus_control::app::{App, MAX_EVENTS_PER_CALL};
use stratus_store::EventRow;
use utoipa::{IntoParams, ToSchema};

/// How often the journal is read for new events while a stream is idle.
pub const EVENTS_POLL: Duration = Duration::from_millis(250);
/// How often an idle stream sends a comment, so proxies keep it open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Most event streams open at once: each reads the journal while idle, so a client opening
/// stream after stream cannot wear the journal down.
pub const MAX_EVENT_STREAMS: usize = 64;

/// One journal event, the `data:` of an SSE event.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    /// The journal id, also the SSE `id:`.
    pub id: i64,
    /// Unix milliseconds.
    pub at_ms: i64,
    pub level: String,
    pub component: String,
    pub deployment: Option<String>,
    pub server: Option<String>,
    pub service: Option<String>,
    pub message: String,
}

impl From<EventRow> for EventView {
    fn from(r: EventRow) -> EventView {
        EventView {
            id: r.seq,
            at_ms: r.time,
            level: r.level,
            component: r.component,
            deployment: r.deployment,
            server: r.server,
            service: r.service,
            message: r.message,
        }
    }
}

#[derive(Deserialize, IntoParams)]
pub struct EventsQuery {
    /// Only this deployment's events.
    pub deployment: Option<String>,
}

/// Follow the journal's events (`text/event-stream`), after `Last-Event-ID` when given.
#[utoipa::path(get, path = "/v1/events", tag = "events",
    params(EventsQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event id")),
    responses((status = 200, content_type = "text/event-stream", body = EventView,
            description = "One `event: event` per journal event; `data:` is an EventView"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json",
            description = "Too many event streams are open")),
    security(("bearer" = [])))]
pub async fn events(
    State(st): State<ApiState>,
    query: Result<Query<EventsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let Query(q) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let after = match headers.get("last-event-id") {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .filter(|id| *id >= 0)
            .ok_or_else(|| Problem::bad_request("Last-Event-ID must be an event id"))?,
    };
    // An unknown deployment is a 404 now, not an empty stream.
    st.ctx.app.events(q.deployment.as_deref(), after, 0)?;
    let permit = st.streams.clone().try_acquire_owned().map_err(|_| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too-many-streams",
            format!("{MAX_EVENT_STREAMS} event streams are open already; close one"),
        )
    })?;
    let cursor = Cursor {
        _permit: permit,
        app: st.ctx.app.clone(),
        deployment: q.deployment,
        after,
        pending: VecDeque::new(),
    };
    let stream = futures::stream::unfold(cursor, |mut c| async move {
        let row = c.next().await?;
        Some((Ok(sse_event(row)), c))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

fn sse_event(row: EventRow) -> Event {
    let id = row.seq.to_string();
    let data = serde_json::to_string(&EventView::from(row)).unwrap_or_default();
    Event::default().id(id).event("event").data(data)
}

/// Where a stream is in the journal.
struct Cursor {
    /// Held while the stream lives.
    _permit: tokio::sync::OwnedSemaphorePermit,
    app: App,
    deployment: Option<String>,
    after: i64,
    pending: VecDeque<EventRow>,
}

impl Cursor {
    /// The next event after the last one sent, waiting for it; `None` ends the stream.
    async fn next(&mut self) -> Option<EventRow> {
        loop {
            if let Some(row) = self.pending.pop_front() {
                self.after = row.seq;
                return Some(row);
            }
            let (app, dep, after) = (self.app.clone(), self.deployment.clone(), self.after);
            let read = tokio::task::spawn_blocking(move || {
                app.events(dep.as_deref(), after, MAX_EVENTS_PER_CALL)
            });
            match read.await {
                Ok(Ok(rows)) if rows.is_empty() => tokio::time::sleep(EVENTS_POLL).await,
                Ok(Ok(rows)) => self.pending.extend(rows),
                _ => return None,
            }
        }
    }
}
