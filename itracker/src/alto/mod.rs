//! RFC 7285 messages.
