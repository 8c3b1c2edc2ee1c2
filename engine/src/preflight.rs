//! Pre-flight (filled in below).
