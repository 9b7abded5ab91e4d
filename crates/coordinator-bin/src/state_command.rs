//! `coordinator state check|salvage`: the operator's tools for a state directory whose journal
//! the coordinator refused to open (it says so at start, naming the damage).

use crate::config::StateCommand;
use std::path::Path;
use std::process::ExitCode;
use wasm_exec_coordinator::state::salvage;

/// Runs `command` on the state directory `dir` and prints the report.
pub fn run(command: &StateCommand, dir: &Path) -> anyhow::Result<ExitCode> {
    let report = match command {
        StateCommand::Check => salvage::check(dir)?,
        StateCommand::Salvage => salvage::salvage(dir)?,
    };
    println!("{report}");
    let damaged = report.bad_regions + report.unreadable > 0;
    Ok(match command {
        StateCommand::Check if damaged => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    })
}
