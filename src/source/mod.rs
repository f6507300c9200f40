//! Sources: every way events come in. `POST /api/events` is one
//! (`routes::ingest`), the bus consumers are the others. They differ in
//! transport only.
//!
//! Contract (DESIGN.md, "Sources and clients"):
//! - A source turns its input into the events of one batch and sends the
//!   same [`crate::ingest::Ingest`] as HTTP ([`batch`]); it learns, per
//!   message in input order, whether it was stored, a duplicate, or
//!   refused, and acknowledges upstream only what is committed.
//! - A bus message becomes an event through the mapping file ([`mapping`],
//!   `PULSEHUB_MAPPING_FILE`) and the very validation of `POST /api/events`
//!   ([`decode`]); what is refused is dead-lettered by its source, never
//!   retried in a loop.

pub mod batch;
pub mod decode;
pub mod mapping;
