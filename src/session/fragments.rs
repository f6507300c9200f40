//! Reassembles fragmented WebSocket messages (RFC 6455 §5.4). The codec
//! hands each fragment over as a continuation item and already refuses
//! fragments out of order; this joins them into one message, up to `cap`
//! bytes in all, and checks that a text message is UTF-8 only once it is
//! whole (a character may span fragments).

use actix_http::ws::Item;
use bytes::BytesMut;

/// A whole message.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    Text(String),
    Binary,
}

/// Why a message cannot be assembled; each closes the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Over the cap: close 1009.
    TooLarge,
    /// A text message that is not UTF-8: close 1007.
    InvalidUtf8,
    /// A fragment out of order: close 1002.
    OutOfOrder,
}

pub struct Fragments {
    cap: usize,
    /// The message being assembled: whether it is text, and its bytes.
    open: Option<(bool, BytesMut)>,
}

impl Fragments {
    pub fn new(cap: usize) -> Self {
        Fragments { cap, open: None }
    }

    /// Takes one fragment; returns the message once its last one came.
    pub fn push(&mut self, item: Item) -> Result<Option<Message>, Refused> {
        let (data, last) = match item {
            Item::FirstText(_) | Item::FirstBinary(_) if self.open.is_some() => {
                return Err(Refused::OutOfOrder);
            }
            Item::FirstText(data) => {
                self.open = Some((true, BytesMut::new()));
                (data, false)
            }
            Item::FirstBinary(data) => {
                self.open = Some((false, BytesMut::new()));
                (data, false)
            }
            Item::Continue(data) => (data, false),
            Item::Last(data) => (data, true),
        };
        let Some((_, buf)) = self.open.as_mut() else {
            return Err(Refused::OutOfOrder);
        };
        if buf.len() + data.len() > self.cap {
            self.open = None;
            return Err(Refused::TooLarge);
        }
        buf.extend_from_slice(&data);
        if !last {
            return Ok(None);
        }
        let Some((text, buf)) = self.open.take() else {
            return Err(Refused::OutOfOrder);
        };
        if !text {
            return Ok(Some(Message::Binary));
        }
        String::from_utf8(buf.to_vec())
            .map(|s| Some(Message::Text(s)))
            .map_err(|_| Refused::InvalidUtf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn b(s: &[u8]) -> Bytes {
        Bytes::copy_from_slice(s)
    }

    #[test]
    fn joins_fragments_even_inside_a_character() {
        let mut f = Fragments::new(100);
        let text = "{\"type\":\"ping\",\"x\":\"é\"}".as_bytes();
        let split = text.iter().position(|&c| c == 0xc3).unwrap() + 1;
        assert_eq!(f.push(Item::FirstText(b(&text[..5]))), Ok(None));
        assert_eq!(f.push(Item::Continue(b(&text[5..split]))), Ok(None));
        assert_eq!(
            f.push(Item::Last(b(&text[split..]))),
            Ok(Some(Message::Text(
                String::from_utf8(text.to_vec()).unwrap()
            )))
        );
        // And the next message starts afresh.
        assert_eq!(f.push(Item::FirstBinary(b(b"ab"))), Ok(None));
        assert_eq!(f.push(Item::Last(b(b"c"))), Ok(Some(Message::Binary)));
    }

    #[test]
    fn refuses_oversized_invalid_and_out_of_order() {
        let mut f = Fragments::new(4);
        assert_eq!(f.push(Item::FirstText(b(b"abc"))), Ok(None));
        assert_eq!(f.push(Item::Last(b(b"de"))), Err(Refused::TooLarge));
        assert_eq!(f.push(Item::Continue(b(b"x"))), Err(Refused::OutOfOrder));
        assert_eq!(f.push(Item::FirstText(b(&[0xff]))), Ok(None));
        assert_eq!(f.push(Item::Last(b(b"a"))), Err(Refused::InvalidUtf8));
        assert_eq!(f.push(Item::FirstText(b(b"a"))), Ok(None));
        assert_eq!(f.push(Item::FirstText(b(b"a"))), Err(Refused::OutOfOrder));
    }
}
