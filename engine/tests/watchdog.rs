//! The stall watchdog names a core that runs nothing for longer than the
//! threshold, and says when it runs again, while the other core is fine.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyless_engine::runtime::{run_per_core, RuntimeConfig};

/// Log lines, captured.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_blocked_core_is_logged_and_its_recovery_too() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let config = RuntimeConfig {
        cores: 2,
        stall_threshold: Duration::from_millis(150),
        ..RuntimeConfig::default()
    };
    run_per_core(&config, |core| async move {
        // Let both heartbeats start, then block core 1 (and only it).
        glommio::timer::sleep(Duration::from_millis(100)).await;
        if core == 1 {
            std::thread::sleep(Duration::from_millis(500));
        }
        glommio::timer::sleep(Duration::from_millis(200)).await;
        Ok::<(), String>(())
    })
    .unwrap();
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("core 1 has run nothing for"), "{log}");
    assert!(log.contains("core 1 runs again after a stall of about"), "{log}");
    assert!(!log.contains("core 0 has run nothing"), "{log}");
}
