//! Client commands: every inbound frame counts against the command rate,
//! then a text frame is parsed and answered (`ping`, `subscribe`,
//! `unsubscribe`, `activity`, `refresh`). A refused frame gets an `error`
//! frame and never closes the connection by itself; a connection that keeps
//! passing the rate is closed with 1008.

use super::WsSession;
use crate::error::HubError;
use crate::presence;
use crate::protocol::{encode, parse_command, sniff_ref, Command, Request, ServerFrame};
use actix_web_actors::ws;
use std::sync::Arc;

impl WsSession {
    /// Counts one inbound frame against the command rate. Over it, the frame
    /// is refused: answered `rate_limited` (with the frame's `ref`, read by
    /// `reference` only then) unless `reference` is `None` (a frame that
    /// gets no reply: fragments, pings), and a connection over the abuse
    /// limit is closed (1008).
    pub(super) fn admit(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        reference: Option<&dyn Fn() -> Option<i64>>,
    ) -> bool {
        if self.limiter.check().is_ok() {
            return true;
        }
        if self.abuse.check().is_err() {
            self.close(ctx, 1008, "repeated abuse: command rate exceeded");
        } else if let Some(reference) = reference {
            self.reply_error(
                ctx,
                reference(),
                &HubError::RateLimited("too many commands; slow down".into()),
            );
        }
        false
    }

    pub(super) fn on_binary(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        if self.admit(ctx, Some(&|| None)) {
            self.reply_error(
                ctx,
                None,
                &HubError::BadRequest("binary frames are not supported; send JSON text".into()),
            );
        }
    }

    pub(super) fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        if !self.admit(ctx, Some(&|| sniff_ref(text))) {
            return;
        }
        if text.len() > self.state.config.max_frame_bytes {
            return self.reply_error(
                ctx,
                sniff_ref(text),
                &HubError::TooLarge(format!(
                    "frame of {} bytes; the limit is {}",
                    text.len(),
                    self.state.config.max_frame_bytes
                )),
            );
        }
        match parse_command(text) {
            Ok(req) => self.on_command(req, ctx),
            Err(rejected) => self.reply_error(ctx, rejected.reference, &rejected.error),
        }
    }

    fn on_command(&mut self, req: Request, ctx: &mut ws::WebsocketContext<Self>) {
        let reference = req.reference;
        let ok = encode(&ServerFrame::Ok { reference });
        match req.command {
            Command::Ping => self.send(ctx, encode(&ServerFrame::Pong { reference })),
            Command::Subscribe { channel, since } => {
                if let Err(e) = self.subscribe(&channel, since, reference, ctx) {
                    self.reply_error(ctx, reference, &e);
                }
            }
            Command::Unsubscribe { channel } => {
                if let Some(name) = self.subs.keys().find(|k| ***k == *channel).cloned() {
                    self.drop_sub(&name);
                }
                self.send(
                    ctx,
                    encode(&ServerFrame::Unsubscribed {
                        reference,
                        channel: &channel,
                    }),
                );
            }
            Command::Activity { action, target: _ } => {
                self.state.presence.do_send(presence::Activity {
                    session: self.id.clone(),
                    action,
                });
                if reference.is_some() {
                    self.send(ctx, ok);
                }
            }
            Command::Refresh { token } => match self.refresh(&token, ctx) {
                Ok(()) if reference.is_some() => self.send(ctx, ok),
                Ok(()) => {}
                Err(e) => self.reply_error(ctx, reference, &e),
            },
        }
    }

    /// Replaces the token: same user only; subscriptions the new token does
    /// not allow are ended with a server-initiated `unsubscribed`.
    fn refresh(
        &mut self,
        token: &str,
        ctx: &mut ws::WebsocketContext<Self>,
    ) -> Result<(), HubError> {
        let claims = self.state.tokens.verify(token)?;
        if claims.sub != self.claims.sub {
            return Err(HubError::Forbidden(
                "a refreshed token must be for the same user".into(),
            ));
        }
        self.claims = claims;
        self.schedule_expiry(ctx);
        let revoked: Vec<Arc<str>> = self
            .subs
            .iter()
            .filter(|(_, s)| self.claims.may_read(&s.channel).is_err())
            .map(|(k, _)| k.clone())
            .collect();
        for name in revoked {
            self.drop_sub(&name);
            self.send(
                ctx,
                encode(&ServerFrame::Unsubscribed {
                    reference: None,
                    channel: &name,
                }),
            );
        }
        Ok(())
    }
}
