//! Integration tests of the tracker's front ends: real servers on loopback, real sockets.

mod http;
mod udp;
