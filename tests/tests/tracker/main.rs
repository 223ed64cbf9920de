//! Integration tests of the tracker's front ends: real servers on loopback, real sockets.

mod access;
mod http;
mod p4p;
mod push;
mod udp;
