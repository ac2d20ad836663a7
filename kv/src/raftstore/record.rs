//! Binary encodings of the Raft values a peer persists (the `raft` crate has no serialization
//! of its own, by design: it does no I/O).

use raft::{ConfState, Entry, EntryKind, HardState, Index, Term};

use crate::error::{KvError, KvResult};

fn corrupt(what: &str) -> KvError {
    KvError::Corrupt(format!("malformed {what} in the raft column family"))
}

fn take_u64(input: &mut &[u8], what: &str) -> KvResult<u64> {
    if input.len() < 8 {
        return Err(corrupt(what));
    }
    let (head, rest) = input.split_at(8);
    *input = rest;
    Ok(u64::from_be_bytes(
        head.try_into().map_err(|_| corrupt(what))?,
    ))
}

pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(17 + entry.data.len());
    out.extend_from_slice(&entry.term.to_be_bytes());
    out.extend_from_slice(&entry.index.to_be_bytes());
    out.push(match entry.kind {
        EntryKind::Normal => 0,
        EntryKind::ConfChange => 1,
    });
    out.extend_from_slice(&entry.data);
    out
}

pub fn decode_entry(mut input: &[u8]) -> KvResult<Entry> {
    let term = take_u64(&mut input, "entry")?;
    let index = take_u64(&mut input, "entry")?;
    let (&kind, data) = input.split_first().ok_or_else(|| corrupt("entry"))?;
    let kind = match kind {
        0 => EntryKind::Normal,
        1 => EntryKind::ConfChange,
        _ => return Err(corrupt("entry kind")),
    };
    Ok(Entry {
        term,
        index,
        kind,
        data: data.to_vec(),
    })
}

pub fn encode_hard_state(hs: &HardState) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(&hs.term.to_be_bytes());
    out.extend_from_slice(&hs.vote.unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&hs.commit.to_be_bytes());
    out
}

pub fn decode_hard_state(mut input: &[u8]) -> KvResult<HardState> {
    let term = take_u64(&mut input, "hard state")?;
    let vote = take_u64(&mut input, "hard state")?;
    let commit = take_u64(&mut input, "hard state")?;
    Ok(HardState {
        term,
        vote: (vote != 0).then_some(vote),
        commit,
    })
}

/// What a peer has applied, and where its log starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyState {
    pub applied: Index,
    /// The last entry removed from the log (compacted or covered by a snapshot), and its term.
    pub truncated_index: Index,
    pub truncated_term: Term,
}

pub fn encode_apply_state(state: &ApplyState) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    for v in [state.applied, state.truncated_index, state.truncated_term] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out
}

pub fn decode_apply_state(mut input: &[u8]) -> KvResult<ApplyState> {
    Ok(ApplyState {
        applied: take_u64(&mut input, "apply state")?,
        truncated_index: take_u64(&mut input, "apply state")?,
        truncated_term: take_u64(&mut input, "apply state")?,
    })
}

pub fn encode_conf_state(conf: &ConfState) -> Vec<u8> {
    let mut out = Vec::new();
    for set in [&conf.voters, &conf.learners] {
        out.extend_from_slice(&(set.len() as u64).to_be_bytes());
        for id in set {
            out.extend_from_slice(&id.to_be_bytes());
        }
    }
    out
}

pub fn decode_conf_state(mut input: &[u8]) -> KvResult<ConfState> {
    let mut conf = ConfState::default();
    for set in [&mut conf.voters, &mut conf.learners] {
        let n = take_u64(&mut input, "conf state")?;
        for _ in 0..n {
            set.insert(take_u64(&mut input, "conf state")?);
        }
    }
    Ok(conf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let entry = Entry {
            term: 3,
            index: 9,
            kind: EntryKind::ConfChange,
            data: b"x\0y".to_vec(),
        };
        assert_eq!(decode_entry(&encode_entry(&entry)).unwrap(), entry);
        for hs in [
            HardState::default(),
            HardState {
                term: 4,
                vote: Some(2),
                commit: 7,
            },
        ] {
            assert_eq!(decode_hard_state(&encode_hard_state(&hs)).unwrap(), hs);
        }
        let apply = ApplyState {
            applied: 5,
            truncated_index: 3,
            truncated_term: 2,
        };
        assert_eq!(
            decode_apply_state(&encode_apply_state(&apply)).unwrap(),
            apply
        );
        let mut conf = ConfState::with_voters([1, 2, 3]);
        conf.learners.insert(9);
        assert_eq!(decode_conf_state(&encode_conf_state(&conf)).unwrap(), conf);
        assert!(decode_entry(b"short").is_err());
        assert!(decode_conf_state(&[0, 0, 0, 0, 0, 0, 0, 5]).is_err());
    }
}
