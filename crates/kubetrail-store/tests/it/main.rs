//! Integration tests of the store: real files, real processes.

mod crash;
mod queries;
mod unlogged;
