//! The channels between cores: for every ordered pair of cores, one bounded
//! channel for jobs and one for answers.
//!
//! Every channel is made on the spawning thread and each end is moved to
//! the core that uses it and connected there (glommio's `shared_channel`:
//! its unconnected ends are `Send`, each holds an `Rc` that nothing else
//! shares until it is connected on its own core). Nothing here is ever
//! touched by two threads, so no `unsafe impl` is needed.
//!
//! Two kinds of channel, not one: a core blocked sending a job must never
//! be what keeps another core from delivering an answer, so answers travel
//! on their own channels whose receivers never block.

use std::future::Future;

use glommio::channels::shared_channel::{self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender};

use crate::request::Request;

/// A request handed to another core, and where its answer goes.
#[derive(Debug)]
pub struct Job {
    pub origin: usize,
    pub conn: u64,
    pub request: Request,
}

/// An answer on its way back to the core holding the connection.
#[derive(Debug)]
pub struct Answer {
    pub conn: u64,
    /// One encoded response frame.
    pub frame: Vec<u8>,
    pub opcode: u8,
    /// The answer's error byte (0: none), for the metrics.
    pub error: u8,
    pub read_at: std::time::Instant,
}

/// One core's ends of every channel, not yet connected. Index `i` of each
/// list is the channel to or from core `i` (`None` at the core's own index).
pub struct Unconnected {
    jobs_out: Vec<Option<SharedSender<Job>>>,
    jobs_in: Vec<Option<SharedReceiver<Job>>>,
    answers_out: Vec<Option<SharedSender<Answer>>>,
    answers_in: Vec<Option<SharedReceiver<Answer>>>,
}

/// Make the channels for `cores` cores, `capacity` entries each; entry `i`
/// of the result belongs to core `i`.
pub fn build(cores: usize, capacity: usize) -> Vec<Unconnected> {
    let mut ends: Vec<Unconnected> = (0..cores)
        .map(|_| Unconnected {
            jobs_out: (0..cores).map(|_| None).collect(),
            jobs_in: (0..cores).map(|_| None).collect(),
            answers_out: (0..cores).map(|_| None).collect(),
            answers_in: (0..cores).map(|_| None).collect(),
        })
        .collect();
    for from in 0..cores {
        for to in (0..cores).filter(|&to| to != from) {
            let (tx, rx) = shared_channel::new_bounded(capacity);
            ends[from].jobs_out[to] = Some(tx);
            ends[to].jobs_in[from] = Some(rx);
            let (tx, rx) = shared_channel::new_bounded(capacity);
            ends[from].answers_out[to] = Some(tx);
            ends[to].answers_in[from] = Some(rx);
        }
    }
    ends
}

/// One core's connected senders; receivers are handed to its workers.
pub struct Links {
    pub jobs: Vec<Option<ConnectedSender<Job>>>,
    pub answers: Vec<Option<ConnectedSender<Answer>>>,
}

/// Receivers of jobs and answers from every other core.
pub struct Inboxes {
    pub jobs: Vec<ConnectedReceiver<Job>>,
    pub answers: Vec<ConnectedReceiver<Answer>>,
}

impl Unconnected {
    /// Connect every end on this core. Each connection completes when the
    /// peer core connects its end, so all are connected at once: in order,
    /// two cores could each wait for the end the other has not reached.
    pub async fn connect(self) -> (Links, Inboxes) {
        let jobs = spawn_all(self.jobs_out.into_iter().map(|e| e.map(SharedSender::connect)));
        let answers = spawn_all(self.answers_out.into_iter().map(|e| e.map(SharedSender::connect)));
        let job_rx = spawn_all(self.jobs_in.into_iter().map(|e| e.map(SharedReceiver::connect)));
        let answer_rx = spawn_all(self.answers_in.into_iter().map(|e| e.map(SharedReceiver::connect)));
        let links = Links {
            jobs: wait_all(jobs).await,
            answers: wait_all(answers).await,
        };
        let inboxes = Inboxes {
            jobs: wait_all(job_rx).await.into_iter().flatten().collect(),
            answers: wait_all(answer_rx).await.into_iter().flatten().collect(),
        };
        (links, inboxes)
    }
}

type Tasks<T> = Vec<Option<glommio::Task<T>>>;

/// Start every future as a task of this core, so that all make progress
/// while [`wait_all`] waits for them one by one.
fn spawn_all<T: 'static>(futures: impl Iterator<Item = Option<impl Future<Output = T> + 'static>>) -> Tasks<T> {
    futures.map(|f| f.map(glommio::spawn_local)).collect()
}

async fn wait_all<T>(tasks: Tasks<T>) -> Vec<Option<T>> {
    let mut done = Vec::with_capacity(tasks.len());
    for task in tasks {
        done.push(match task {
            Some(task) => Some(task.await),
            None => None,
        });
    }
    done
}
