//! A [`Collective`] over threads of one process: one channel per ordered
//! pair of ranks, so an operation's messages can never mix with the next
//! one's. Ordinary unit tests use it to run every rank of a job in one
//! process, without MPI.

use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::anyhow;

use super::collective::{Collective, PEER_TIMEOUT};

pub struct ThreadCollective {
    rank: usize,
    /// `to[j]` carries this rank's messages to rank `j`.
    to: Vec<Sender<Vec<u8>>>,
    /// `from[j]` carries rank `j`'s messages to this rank (a Mutex only to make the handle `Sync`).
    from: Vec<Mutex<Receiver<Vec<u8>>>>,
    timeout: Duration,
}

impl ThreadCollective {
    /// The `size` handles of a new group, rank `r` at index `r`: move each to its thread.
    pub fn group(size: usize) -> Vec<ThreadCollective> {
        Self::group_with_timeout(size, PEER_TIMEOUT)
    }

    /// [`ThreadCollective::group`] whose receives give up after `timeout`.
    pub fn group_with_timeout(size: usize, timeout: Duration) -> Vec<ThreadCollective> {
        assert!(size > 0, "a group needs at least one rank");
        // senders[i][j], receivers[j][i]: the channel from rank i to rank j.
        let mut senders: Vec<Vec<Sender<Vec<u8>>>> = (0..size).map(|_| Vec::new()).collect();
        let mut receivers: Vec<Vec<Option<Receiver<Vec<u8>>>>> = (0..size).map(|_| (0..size).map(|_| None).collect()).collect();
        for (i, to) in senders.iter_mut().enumerate() {
            for inbox in receivers.iter_mut() {
                let (tx, rx) = channel();
                to.push(tx);
                inbox[i] = Some(rx);
            }
        }
        senders
            .into_iter()
            .zip(receivers)
            .enumerate()
            .map(|(rank, (to, from))| ThreadCollective { rank, to, from: from.into_iter().map(|r| Mutex::new(r.expect("every pair has a channel"))).collect(), timeout })
            .collect()
    }

    fn send(&self, j: usize, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.to[j].send(bytes).map_err(|_| anyhow!("rank {j} left the job (rank {} could not send to it)", self.rank))
    }

    fn receive(&self, j: usize) -> anyhow::Result<Vec<u8>> {
        let from = self.from[j].lock().map_err(|_| anyhow!("rank {}: a receive panicked", self.rank))?;
        from.recv_timeout(self.timeout).map_err(|e| match e {
            RecvTimeoutError::Disconnected => anyhow!("rank {j} left the job (rank {} was waiting for it)", self.rank),
            RecvTimeoutError::Timeout => anyhow!("rank {j} did not answer rank {} within {:.0} s; stopping", self.rank, self.timeout.as_secs_f64()),
        })
    }
}

impl Collective for ThreadCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.to.len()
    }

    fn all_gather_counts(&self, n: u64) -> anyhow::Result<Vec<u64>> {
        Ok(self.all_gather_v(&n.to_le_bytes())?.iter().map(|b| u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))).collect())
    }

    fn all_gather_v(&self, bytes: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
        for j in 0..self.size() {
            self.send(j, bytes.to_vec())?;
        }
        (0..self.size()).map(|j| self.receive(j)).collect()
    }

    fn all_to_all_v(&self, send: &[&[u8]]) -> anyhow::Result<Vec<Vec<u8>>> {
        assert_eq!(send.len(), self.size(), "all_to_all_v needs one buffer per rank");
        for (j, bytes) in send.iter().enumerate() {
            self.send(j, bytes.to_vec())?;
        }
        (0..self.size()).map(|j| self.receive(j)).collect()
    }

    fn barrier(&self) -> anyhow::Result<()> {
        self.all_gather_v(&[]).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_threads<T: Send + 'static>(size: usize, f: impl Fn(&dyn Collective) -> T + Send + Sync + Copy + 'static) -> Vec<T> {
        let handles: Vec<_> = ThreadCollective::group(size).into_iter().map(|c| std::thread::spawn(move || f(&c))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn all_gather_and_all_to_all_deliver_every_message_in_rank_order() {
        for size in [1, 2, 4] {
            let got = on_threads(size, |c| {
                let r = c.rank() as u32;
                // Rank r sends r+1 copies of r: variable lengths.
                let gathered = c.all_gather_v_u32(&vec![r; r as usize + 1]).unwrap();
                // To rank j: [r, j] repeated j times.
                let send: Vec<Vec<u32>> = (0..c.size() as u32).map(|j| (0..j).flat_map(|_| [r, j]).collect()).collect();
                let received = c.all_to_all_v_u32(&send).unwrap();
                let counts = c.all_gather_counts(10 + r as u64).unwrap();
                c.barrier().unwrap();
                (gathered, received, counts)
            });
            for (me, (gathered, received, counts)) in got.into_iter().enumerate() {
                for (r, g) in gathered.iter().enumerate() {
                    assert_eq!(g, &vec![r as u32; r + 1]);
                }
                for (r, g) in received.iter().enumerate() {
                    let want: Vec<u32> = (0..me).flat_map(|_| [r as u32, me as u32]).collect();
                    assert_eq!(g, &want, "rank {me} from {r}");
                }
                assert_eq!(counts, (0..size as u64).map(|r| 10 + r).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn all_reduce_sums_in_rank_order_identically_on_every_rank() {
        let got = on_threads(4, |c| {
            // Values whose sum depends on the order of addition in f32.
            let mut v: Vec<f32> = (0..100).map(|i| ((i * 7 + c.rank() * 13) as f32).sin() * 10f32.powi(c.rank() as i32 * 3 - 4)).collect();
            c.all_reduce_sum_f32(&mut v).unwrap();
            v
        });
        // Independently: the same values, added in rank order.
        let want: Vec<f32> = (0..100)
            .map(|i| (0..4usize).map(|r| ((i * 7 + r * 13) as f32).sin() * 10f32.powi(r as i32 * 3 - 4)).fold(None, |acc: Option<f32>, x| Some(acc.map_or(x, |a| a + x))).unwrap())
            .collect();
        for v in &got {
            assert_eq!(v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_rank_that_leaves_makes_its_peers_fail_instead_of_waiting() {
        let mut group = ThreadCollective::group_with_timeout(2, Duration::from_secs(30));
        let survivor = group.remove(0);
        drop(group); // rank 1 leaves without taking part
        let started = std::time::Instant::now();
        let err = survivor.all_gather_counts(1).unwrap_err().to_string();
        assert!(err.contains("rank 1 left the job"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
