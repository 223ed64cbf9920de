//! Pure wire codecs: HTTP (BEP 3/23/7/48) and UDP (BEP 15). No sockets here.

pub mod udp;
