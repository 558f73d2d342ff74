//! Reads: events, miniblocks and minipools in wire form, in pages bounded in bytes, and a
//! stream loaded for the engine from its latest snapshot.

use std::collections::{HashMap, HashSet};

use alloy_primitives::B256;
use prost::Message as _;
use rill_protocol::{ParsedEvent, ParsedMiniblock, StreamId, pb};

use crate::entries;
use crate::keys;
use crate::store::{Store, StoreError, StoredStream, decode_envelope, decode_header};

/// How many of a stream's last promoted miniblocks [`Store::events`] looks in.
pub(crate) const RECENT_MINIBLOCKS: usize = 4;

impl Store {
    /// The envelopes with these hashes that the store has for the stream: in its minipool,
    /// its candidates, its last [`RECENT_MINIBLOCKS`] promoted miniblocks, or under their
    /// hashes where an older version stored them. A peer asks for events it heard of and
    /// lacks, which older miniblocks do not hold (it takes those whole, `GetMiniblocks`).
    pub fn events(&self, id: &StreamId, hashes: &[B256]) -> Result<Vec<pb::Envelope>, StoreError> {
        self.events_page(id, hashes, usize::MAX)
    }

    /// Promoted miniblock `num`'s header alone, in wire form. A client builds its next event
    /// on the head's number and hash: reading the whole miniblock for them would read every
    /// event it holds (from the pool's rows too, until it is settled).
    pub fn header(&self, id: &StreamId, num: u64) -> Result<Option<pb::Envelope>, StoreError> {
        self.miniblocks
            .get(keys::numbered(id, num))?
            .map(|header| decode_envelope(&header))
            .transpose()
    }

    /// Promoted miniblocks `from ..= to`, in wire form.
    pub fn miniblocks(
        &self,
        id: &StreamId,
        from: u64,
        to: u64,
    ) -> Result<Vec<pb::Miniblock>, StoreError> {
        self.miniblocks
            .range(keys::numbered(id, from)..=keys::numbered(id, to))
            .values()
            .map(|header| self.assemble(id, &header?))
            .collect()
    }

    /// Promoted miniblocks from `from` on, up to `to` or until `max_bytes` of them (at least
    /// one), in wire form; and whether the page reached `to` (or the stored head). The page
    /// is contiguous: it is empty if `from` is not stored and ends at a gap (a replica that
    /// jumped to a snapshot lacks the miniblocks before it).
    pub fn miniblocks_page(
        &self,
        id: &StreamId,
        from: u64,
        to: u64,
        max_bytes: usize,
    ) -> Result<(Vec<pb::Miniblock>, bool), StoreError> {
        let mut page = Vec::new();
        let mut bytes = 0;
        for entry in self
            .miniblocks
            .range(keys::numbered(id, from)..=keys::numbered(id, to))
        {
            let (key, header) = entry?;
            if keys::num_of(&key) != from + page.len() as u64 {
                return Ok((page, false));
            }
            let miniblock = self.assemble(id, &header)?;
            let size = miniblock.encoded_len();
            if !page.is_empty() && bytes + size > max_bytes {
                return Ok((page, false));
            }
            bytes += size;
            page.push(miniblock);
        }
        Ok((page, true))
    }

    /// [`Store::events`], up to `max_bytes` of them (at least one).
    pub fn events_page(
        &self,
        id: &StreamId,
        hashes: &[B256],
        max_bytes: usize,
    ) -> Result<Vec<pb::Envelope>, StoreError> {
        let wanted: HashSet<B256> = hashes.iter().copied().collect();
        let mut found = HashMap::new();
        let prefix = keys::stream_prefix(id);
        gather(&wanted, &mut found, self.pool.scan_prefix(prefix).values())?;
        gather(
            &wanted,
            &mut found,
            self.candidate_bodies.scan_prefix(prefix).values(),
        )?;
        let recent = self.miniblocks.scan_prefix(prefix).keys().rev();
        for key in recent.take(RECENT_MINIBLOCKS) {
            if found.len() == wanted.len() {
                break;
            }
            gather(&wanted, &mut found, self.bodies.scan_prefix(key?).values())?;
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        for hash in hashes {
            let raw = match found.get(hash) {
                Some(raw) => raw.clone(),
                None => match self.events.get(hash.as_slice())? {
                    Some(raw) => raw.to_vec(),
                    None => continue,
                },
            };
            if !out.is_empty() && bytes + raw.len() > max_bytes {
                break;
            }
            bytes += raw.len();
            out.push(decode_envelope(&raw)?);
        }
        Ok(out)
    }

    /// A promoted miniblock in wire form, from its header and its parts (or, while its
    /// promotion is pending, its candidate's parts and the pool).
    pub(crate) fn assemble(
        &self,
        id: &StreamId,
        header: &[u8],
    ) -> Result<pb::Miniblock, StoreError> {
        let (envelope, fields) = decode_header(header)?;
        let key = keys::numbered(id, fields.num);
        if let Some(candidate) = self.pending_candidate(&key)? {
            let parts: Vec<sled::IVec> = self
                .candidate_bodies
                .scan_prefix(candidate)
                .values()
                .collect::<Result<_, _>>()?;
            match self.assemble_from(envelope, &fields, &parts, Some(id)) {
                // The writer settled the promotion while this read went: it wrote the parts,
                // marked them written, then took the pool's rows (and the candidate). The
                // mark says so now, and the miniblock's own parts are whole.
                Err(StoreError::Corrupt(_)) if self.pending_candidate(&key)?.is_none() => {
                    let (envelope, _) = decode_header(header)?;
                    return self.assemble_settled(&key, envelope, &fields);
                }
                assembled => return assembled,
            }
        }
        self.assemble_settled(&key, envelope, &fields)
    }

    /// A promoted miniblock from its own parts (its promotion written whole, or settled).
    fn assemble_settled(
        &self,
        key: &[u8],
        envelope: pb::Envelope,
        fields: &pb::MiniblockHeader,
    ) -> Result<pb::Miniblock, StoreError> {
        let parts: Vec<sled::IVec> = self
            .bodies
            .scan_prefix(key)
            .values()
            .collect::<Result<_, _>>()?;
        self.assemble_from(envelope, fields, &parts, None)
    }

    /// A stored candidate in wire form, from its header, its parts and the stream's pool.
    fn assemble_candidate(
        &self,
        id: &StreamId,
        key: &[u8],
        header: &[u8],
    ) -> Result<pb::Miniblock, StoreError> {
        let (header, fields) = decode_header(header)?;
        let parts: Vec<sled::IVec> = self
            .candidate_bodies
            .scan_prefix(key)
            .values()
            .collect::<Result<_, _>>()?;
        self.assemble_from(header, &fields, &parts, Some(id))
    }

    /// The miniblock whose header names events found in `parts`, then in the pool of stream
    /// `pool` (a candidate's pooled events), then under their hashes (as an older version
    /// stored them).
    fn assemble_from(
        &self,
        header: pb::Envelope,
        fields: &pb::MiniblockHeader,
        parts: &[sled::IVec],
        pool: Option<&StreamId>,
    ) -> Result<pb::Miniblock, StoreError> {
        let hashes = fields
            .event_hashes
            .iter()
            .map(|hash| {
                B256::try_from(hash.as_slice())
                    .map_err(|_| StoreError::Corrupt("an event hash of the wrong size".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let wanted: HashSet<B256> = hashes.iter().copied().collect();
        let mut found = HashMap::new();
        gather(&wanted, &mut found, parts.iter().cloned().map(Ok))?;
        if let Some(id) = pool {
            let rows = self.pool_rows(id)?.into_iter().map(|(_, row)| Ok(row));
            gather(&wanted, &mut found, rows)?;
        }
        let mut events = Vec::with_capacity(hashes.len());
        for hash in &hashes {
            let envelope = match found.get(hash) {
                Some(bytes) => decode_envelope(bytes)?,
                None => {
                    let bytes = self.events.get(hash)?.ok_or_else(|| {
                        StoreError::Corrupt("a miniblock names a missing event".into())
                    })?;
                    decode_envelope(&bytes)?
                }
            };
            events.push(envelope);
        }
        Ok(pb::Miniblock {
            header: Some(header),
            events,
        })
    }

    /// Stored candidates, in wire form (not those promoted and still pending).
    pub fn candidates(&self, id: &StreamId) -> Result<Vec<pb::Miniblock>, StoreError> {
        let mut out = Vec::new();
        for row in self.candidates.scan_prefix(keys::stream_prefix(id)) {
            let (key, header) = row?;
            if self.is_pending_candidate(id, &key) {
                continue;
            }
            match self.assemble_candidate(id, &key, &header) {
                Ok(candidate) => out.push(candidate),
                // Promoted while this read went: pending now, or promoted whole and removed
                // with the pool's rows it read from. It is no longer a candidate.
                Err(StoreError::Corrupt(_))
                    if self.is_pending_candidate(id, &key)
                        || !self.candidates.contains_key(&key)? => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// What the engine needs to load the stream: the promoted miniblocks from its base (the
    /// genesis, or the latest miniblock that carries a snapshot) or from `window` before the
    /// head, whichever is older, then its minipool and its candidates. How much is read does
    /// not grow with the stream's history. Bytes are re-opened with their hashes checked, not
    /// their signatures: this node checked those before it stored them.
    pub fn load(&self, id: &StreamId, window: u64) -> Result<StoredStream, StoreError> {
        let nodes = self.nodes(id)?;
        let Some((head, _)) = self.head(id)? else {
            return Err(StoreError::Incomplete(*id));
        };
        let head_header = self
            .miniblocks
            .get(keys::numbered(id, head))?
            .ok_or_else(|| StoreError::Corrupt(format!("head miniblock {head} is missing")))?;
        let (_, fields) = decode_header(&head_header)?;
        let base = if fields.snapshot.is_some() {
            head
        } else {
            fields.prev_snapshot_num
        };
        let first = base.min(head.saturating_sub(window));
        // The run that ends at the head (a stream taken from a peer's snapshot has nothing
        // before it).
        let mut run = Vec::new();
        for entry in self
            .miniblocks
            .range(keys::numbered(id, first)..=keys::numbered(id, head))
            .rev()
        {
            let (key, header) = entry?;
            if keys::num_of(&key) != head - run.len() as u64 {
                break;
            }
            run.push(header);
        }
        if (run.len() as u64) < head - base + 1 {
            return Err(StoreError::Corrupt(format!(
                "miniblocks {base}..={head} are not all stored"
            )));
        }
        let open_miniblock = |mb: pb::Miniblock| {
            ParsedMiniblock::open_stored(mb).map_err(|e| StoreError::Corrupt(e.to_string()))
        };
        let miniblocks = run
            .iter()
            .rev()
            .map(|header| open_miniblock(self.assemble(id, header)?))
            .collect::<Result<Vec<_>, _>>()?;
        let minipool = self
            .minipool(id)?
            .into_iter()
            .map(|e| ParsedEvent::open_stored(e).map_err(|e| StoreError::Corrupt(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        // A candidate that no longer assembles (its events were dropped) is useless: skip it.
        let candidates = self
            .candidates(id)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|mb| open_miniblock(mb).ok())
            .collect();
        Ok(StoredStream {
            id: *id,
            nodes,
            miniblocks,
            minipool,
            candidates,
            gap: self.gap(id)?,
        })
    }
}

/// Adds to `found` the envelopes of `wanted` events in these values of entries, unless every
/// wanted event is found already.
fn gather(
    wanted: &HashSet<B256>,
    found: &mut HashMap<B256, Vec<u8>>,
    values: impl Iterator<Item = sled::Result<sled::IVec>>,
) -> Result<(), StoreError> {
    for value in values {
        if found.len() == wanted.len() {
            break;
        }
        for entry in entries::decode(&value?)? {
            if wanted.contains(&entry.hash) {
                found
                    .entry(entry.hash)
                    .or_insert_with(|| entry.envelope().to_vec());
            }
        }
    }
    Ok(())
}
