//! `kubectl_complete-ste`: kubectl's plugin completion helper for
//! `kubectl ste` (see `kubectl_ste::complete`). kubectl runs it with the
//! words after `kubectl ste`, the word under the cursor last.

use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let completion = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(kubectl_ste::complete::complete(&args)),
        Err(_) => kubectl_ste::complete::Completion {
            candidates: Vec::new(),
            directive: kubectl_ste::complete::NO_FILE_COMP,
        },
    };
    let _ = std::io::stdout().write_all(completion.render().as_bytes());
}
