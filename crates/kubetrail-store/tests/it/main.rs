//! Integration tests of the store: real files, real processes.

mod crash;
mod unlogged;
