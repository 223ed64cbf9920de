//! BEP 15 UDP tracker codec (pure).
