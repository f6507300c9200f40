//! Dead letters of the Kafka source: each refused message produced to its
//! dead-letter topic with its key, value and headers plus the `dlq_*`
//! headers (contract in the parent module). Until every dead letter of a
//! batch is acknowledged the batch is held and retried, so the consumer
//! never commits past a message it neither stored nor dead-lettered.

use super::{Worker, BACKOFF_MIN, NAME, RETRY_MAX, TIMEOUT};
use crate::metrics::DeadLetterLabels;
use crate::source::decode::Refusal;
use futures_util::FutureExt;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;

impl Worker {
    /// Produces the dead letters until all are acknowledged; `false` when
    /// the hub stops first.
    pub(super) async fn dead_letter(&self, refused: &[(&BorrowedMessage<'_>, &Refusal)]) -> bool {
        let mut left: Vec<usize> = (0..refused.len()).collect();
        let mut wait = BACKOFF_MIN;
        while !left.is_empty() {
            let sends = left.iter().map(|&i| {
                let (m, r) = refused[i];
                self.send_dead_letter(m, r).map(move |result| (i, result))
            });
            let results = futures_util::future::join_all(sends).await;
            left.clear();
            for (i, result) in results {
                let (m, r) = refused[i];
                match result {
                    Ok(()) => self.dead_lettered(m, r),
                    Err(e) => {
                        tracing::warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(), error = %e, "kafka: dead letter not written; holding the batch");
                        left.push(i);
                    }
                }
            }
            if !left.is_empty() {
                if self.pause(wait).await {
                    return false;
                }
                wait = (wait * 2).min(RETRY_MAX);
            }
        }
        true
    }

    /// The dead-letter topic of `topic`.
    fn dead_letter_topic<'a>(&'a self, topic: &'a str) -> &'a str {
        self.settings
            .dead_letters
            .get(topic)
            .map_or(topic, String::as_str)
    }

    /// Produces one dead letter; a message too large for the dead-letter
    /// topic goes without its value (header `dlq_value_omitted`), so a
    /// too-large message can never hold its partition up.
    async fn send_dead_letter(
        &self,
        m: &BorrowedMessage<'_>,
        r: &Refusal,
    ) -> Result<(), KafkaError> {
        match self.produce_dead_letter(m, r, true).await {
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge) => {
                self.produce_dead_letter(m, r, false).await
            }
            other => other,
        }
    }

    async fn produce_dead_letter(
        &self,
        m: &BorrowedMessage<'_>,
        r: &Refusal,
        with_value: bool,
    ) -> Result<(), KafkaError> {
        let topic = self.dead_letter_topic(m.topic());
        let mut headers = OwnedHeaders::new();
        if let Some(original) = m.headers() {
            for h in original.iter() {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        let partition = m.partition().to_string();
        let offset = m.offset().to_string();
        let size = m.payload_len().to_string();
        let mut dlq = vec![
            ("dlq_reason", r.reason.code()),
            ("dlq_error", r.message.as_str()),
            ("dlq_topic", m.topic()),
            ("dlq_partition", partition.as_str()),
            ("dlq_offset", offset.as_str()),
            ("dlq_group", self.settings.group.as_str()),
        ];
        if !with_value {
            dlq.push(("dlq_value_omitted", size.as_str()));
        }
        for (key, value) in dlq {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(k) = m.key() {
            record = record.key(k);
        }
        if let Some(p) = m.payload().filter(|_| with_value) {
            record = record.payload(p);
        }
        self.producer
            .send(record, TIMEOUT)
            .await
            .map(drop)
            .map_err(|(e, _)| e)
    }

    fn dead_lettered(&self, m: &BorrowedMessage<'_>, r: &Refusal) {
        self.shared
            .metrics
            .source
            .dead_lettered
            .get_or_create(&DeadLetterLabels {
                source: NAME.into(),
                stream: m.topic().into(),
                reason: r.reason.code().into(),
            })
            .inc();
        tracing::warn!(
            topic = m.topic(),
            partition = m.partition(),
            offset = m.offset(),
            reason = r.reason.code(),
            error = %r.message,
            dead_letter = self.dead_letter_topic(m.topic()),
            "message dead-lettered"
        );
    }
}
