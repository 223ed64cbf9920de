//! Pure wire codecs: HTTP (BEP 3/23/7/48) and UDP (BEP 15). No sockets here.

pub mod bencode;
pub mod connection_id;
pub mod http;
pub mod udp;
