//! GraphML
