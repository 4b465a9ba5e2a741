//! Prints the NATS `authorization` block for a deployment with the given number of stream
//! partitions (`STREAM_PARTITIONS`; default 1, which is `deploy/nats/permissions.conf`):
//!
//! ```sh
//! cargo run -p events --example nats-permissions -- 3 > permissions.conf
//! ```

use std::process::ExitCode;

use events::Partitions;

fn main() -> ExitCode {
    let count = std::env::args().nth(1).unwrap_or_else(|| "1".to_owned());
    match count.parse().ok().and_then(|n| Partitions::new(n).ok()) {
        Some(partitions) => {
            print!("{}", events::permissions::nats_accounts(partitions));
            ExitCode::SUCCESS
        }
        None => {
            eprintln!(
                "usage: nats-permissions [PARTITIONS]  (1 to {})",
                events::layout::MAX_PARTITIONS
            );
            ExitCode::FAILURE
        }
    }
}
