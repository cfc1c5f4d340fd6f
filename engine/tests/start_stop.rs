//! The engine starts and stops on every core, again and again, without a
//! hang: each round the cores connect their channels, core 0 hands a
//! request to core 1 and gets its answer back, then a drain stops them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use glommio::channels::local_channel;
use keyless_engine::core::Core;
use keyless_engine::request::Request;
use keyless_engine::runtime::{run_per_core, RuntimeConfig};
use keyless_engine::shared::Shared;
use keyless_protocol::{split_frame, ErrorCode, Frame, Message, Opcode};

const ROUNDS: usize = 200;
const CORES: usize = 2;
/// Where each core is, for the report of a hang: 1 joining, 2 joined,
/// 3 waiting for core 1's answer, 4 waiting for the drain, 5 stopped.
static PHASE: [AtomicUsize; CORES] = [AtomicUsize::new(0), AtomicUsize::new(0)];

/// A signing request for a key nobody has: answered with key-not-found.
fn request(id: u32) -> Request {
    let bytes = Frame::new(
        id,
        Message::request(Opcode::ECDSA_SIGN_SHA256, Some([7; 20]), vec![1; 32]),
    )
    .encode()
    .unwrap();
    Request::decode(split_frame(&bytes).unwrap(), Instant::now())
}

fn one_round(round: usize) -> Result<(), String> {
    let shared = Shared::new(CORES, 16);
    let answered = Arc::new(AtomicUsize::new(0));
    let config = RuntimeConfig {
        cores: CORES,
        detect_stalls: false,
        ..RuntimeConfig::default()
    };
    let task_shared = shared.clone();
    let task_answered = answered.clone();
    run_per_core(&config, move |index| {
        let shared = task_shared.clone();
        let answered = task_answered.clone();
        async move {
            PHASE[index].store(1, Ordering::SeqCst);
            let core = Core::join(shared.clone(), index).await?;
            PHASE[index].store(2, Ordering::SeqCst);
            if index == 0 {
                // A failure here must stop core 1 too (it waits for the
                // drain), or it would show as a hang instead of itself.
                let result = core_zero(&core, &shared).await;
                if result.is_err() {
                    shared.start_drain();
                }
                result?;
                answered.fetch_add(2, Ordering::SeqCst);
            }
            PHASE[index].store(4, Ordering::SeqCst);
            core.drain().wait().await;
            PHASE[index].store(5, Ordering::SeqCst);
            Ok::<(), String>(())
        }
    })
    .map_err(|e| format!("round {round}: {e}"))?;
    if answered.load(Ordering::SeqCst) != 2 || shared.handled_per_core() != vec![1, 1] {
        return Err(format!("round {round}: handled {:?}", shared.handled_per_core()));
    }
    Ok(())
}

/// Core 0's part: one request signed here, one handed to core 1 and
/// answered back, then the drain.
async fn core_zero(core: &std::rc::Rc<Core>, shared: &Arc<Shared>) -> Result<(), String> {
    let index = 0;
    let (tx, rx) = local_channel::new_unbounded();
    let conn = core.register(std::rc::Rc::new(tx));
    // The first stays here (a tie), the second goes to the idle core.
    let mut local = Vec::new();
    for id in [1, 2] {
        local.extend(core.dispatch(conn, request(id)).await);
    }
    if core.shared().load_per_core() != vec![1, 1] {
        return Err(format!(
            "one request per core expected: {:?}",
            core.shared().load_per_core()
        ));
    }
    let mut out = Vec::new();
    let mut batch = core.local_batch(&local);
    while core.sign_next(conn, &mut batch, &mut out).is_some() {}
    PHASE[index].store(3, Ordering::SeqCst);
    let (remote, _) = rx.recv().await.ok_or("no answer from core 1")?;
    let mut ids = Vec::new();
    for bytes in [out, remote] {
        let frame = split_frame(&bytes)
            .ok_or("a partial answer")?
            .decode()
            .map_err(|e| e.to_string())?;
        if frame.message.error_code() != Some(Ok(ErrorCode::KeyNotFound)) {
            return Err(format!("answer {}: {:?}", frame.id, frame.message));
        }
        ids.push(frame.id);
    }
    ids.sort();
    if ids != [1, 2] {
        return Err(format!("answers for {ids:?}"));
    }
    core.unregister(conn);
    shared.start_drain();
    Ok(())
}

#[test]
fn starts_and_stops_on_every_core_200_times() {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for round in 0..ROUNDS {
            let result = one_round(round);
            let failed = result.is_err();
            let _ = tx.send(result);
            if failed {
                return;
            }
        }
    });
    for round in 0..ROUNDS {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(result) => result.unwrap(),
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("round {round} of {ROUNDS} hung; phase per core: {PHASE:?}"),
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the test thread died in round {round}"),
        }
    }
}
