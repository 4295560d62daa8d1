//! The RaptorQ object codec (RFC 6330, via raptorq 2.x): the Object Transmission
//! Information (OTI) and its validation, the partition of an object into source blocks,
//! per-block encoding and decoding, block hashes, and the interleaved sending order.
//!
//! This module owns every call into `raptorq`. raptorq panics on malformed input by
//! design, so every public function here validates its arguments first and returns a
//! typed [`FecError`] instead: an [`Oti`] that passes [`Oti::validate`] can never make
//! raptorq panic, and symbols are checked (ESI range, length) before raptorq sees them.
//!
//! Decoding works one source block at a time, so a receiver never needs the whole
//! object in memory: at most one block (bounded by [`BLOCK_BYTES_MAX_LIMIT`]) plus its
//! symbols.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};

use raptorq::{EncodingPacket, ObjectTransmissionInformation, PayloadId, SourceBlockDecoder, SourceBlockEncoder};
use thiserror::Error;

/// Bytes of an encoded OTI: 8 bytes of Common FEC OTI and 4 of Scheme-Specific FEC OTI
/// (RFC 6330 sections 3.3.2 and 3.3.3).
pub const OTI_LEN: usize = 12;

/// The largest encoding symbol identifier (RFC 6330 section 3.2: the ESI is 24 bits).
pub const ESI_MAX: u32 = (1 << 24) - 1;

/// The largest transfer length F. RFC 6330 section 4.4.1.2 says 946270874880; erratum
/// 5548 corrects it to 56403 * 255 * 65535 = 942574504275, and raptorq asserts the
/// corrected value, so that is the one enforced here.
pub const TRANSFER_LENGTH_MAX: u64 = 942_574_504_275;

/// The largest symbol size T satcast accepts. The wire allows 65535 (RFC 6330 section
/// 3.3.2), but a satcast DATA datagram carries one symbol and fits an MTU, and a small
/// bound keeps the decoder's per-symbol memory small.
pub const SYMBOL_SIZE_MAX: u16 = 8192;

/// K'max: the most source symbols in one source block (RFC 6330 section 5.1.2 and the
/// last row of Table 2 in section 5.6; section 4.4.1.2 requires ceil(Kt/Z) <= K'max).
pub const SOURCE_SYMBOLS_MAX: u32 = 56_403;

/// The most source blocks in an object: Z is an 8-bit field (RFC 6330 section 3.3.3).
pub const SOURCE_BLOCKS_MAX: u8 = u8::MAX;

/// The most bytes (K * T) in one source block of any OTI satcast accepts. It bounds the
/// memory a receiver spends decoding one block, whatever a sender announces.
pub const BLOCK_BYTES_MAX_LIMIT: u64 = 64 * 1024 * 1024;

/// The block size satcast senders use unless configured otherwise.
pub const DEFAULT_BLOCK_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// The largest object [`Oti::new_for_object`] can describe with
/// [`DEFAULT_BLOCK_BYTES_MAX`]: 255 blocks of at most 16 MiB, just under 4 GiB. (The
/// exact bound is 255 * floor(16 MiB / T) * T, a little less when T does not divide
/// 16 MiB.)
pub const DEFAULT_OBJECT_BYTES_MAX: u64 = SOURCE_BLOCKS_MAX as u64 * DEFAULT_BLOCK_BYTES_MAX;

/// The symbol alignment Al satcast senders use (RFC 6330 section 4.3 recommends 4 for
/// word-aligned XOR on most hardware). Decoding accepts any Al the RFC allows.
pub const SYMBOL_ALIGNMENT: u8 = 4;

/// The most symbols one [`BlockEncoder::repair_symbols`] call returns. Bounds the
/// memory of one call (at most 512 MiB at [`SYMBOL_SIZE_MAX`]); it exceeds K'max, so a
/// whole block's worth of repair fits in one call.
pub const SYMBOL_BATCH_MAX: u32 = 1 << 16;

/// The most repair symbols beyond K that [`decode_block`] keeps and hands to raptorq.
/// RaptorQ fails with probability about 10^-2 at zero overhead, 10^-4 with one extra
/// symbol and 10^-6 with two (the recovery properties RFC 6330 claims), so more than this
/// buys nothing but decoding time and memory.
pub const DECODE_OVERHEAD_SYMBOLS_MAX: u32 = 64;

/// Everything that can go wrong in this module. Every variant is returned before raptorq
/// is called, except [`FecError::DecodeFailed`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FecError {
    /// An encoded OTI was not exactly [`OTI_LEN`] bytes.
    #[error("oti is {len} bytes, expected {expected}", expected = OTI_LEN)]
    OtiLength {
        /// The length received.
        len: usize,
    },
    /// The reserved byte of the Common FEC OTI was not zero (RFC 6330 section 3.3.2).
    #[error("oti reserved byte is {value:#04x}, expected 0")]
    OtiReserved {
        /// The byte received.
        value: u8,
    },
    /// The transfer length F was zero: there is nothing to send.
    #[error("transfer length is zero")]
    TransferLengthZero,
    /// The transfer length F exceeded [`TRANSFER_LENGTH_MAX`].
    #[error("transfer length {transfer_length} exceeds {max}", max = TRANSFER_LENGTH_MAX)]
    TransferLengthTooLarge {
        /// The transfer length received.
        transfer_length: u64,
    },
    /// The symbol alignment Al was not 1, 2, 4 or 8 (RFC 6330 section 4.3).
    #[error("symbol alignment {alignment} is not 1, 2, 4 or 8")]
    AlignmentInvalid {
        /// The alignment received.
        alignment: u8,
    },
    /// The symbol size T was zero.
    #[error("symbol size is zero")]
    SymbolSizeZero,
    /// The symbol size T was not a multiple of the alignment Al (RFC 6330 section 4.3).
    #[error("symbol size {symbol_size} is not a multiple of alignment {alignment}")]
    SymbolSizeUnaligned {
        /// The symbol size received.
        symbol_size: u16,
        /// The alignment it must be a multiple of.
        alignment: u8,
    },
    /// The symbol size T exceeded [`SYMBOL_SIZE_MAX`].
    #[error("symbol size {symbol_size} exceeds {max}", max = SYMBOL_SIZE_MAX)]
    SymbolSizeTooLarge {
        /// The symbol size received.
        symbol_size: u16,
    },
    /// The OTI asked for N != 1 sub-blocks; satcast does not use sub-blocking.
    #[error("{sub_blocks} sub-blocks requested, satcast supports only 1")]
    SubBlockingUnsupported {
        /// The number of sub-blocks received.
        sub_blocks: u16,
    },
    /// The number of source blocks Z was zero.
    #[error("number of source blocks is zero")]
    SourceBlocksZero,
    /// There were more source blocks Z than source symbols Kt, so some block would be
    /// empty (RFC 6330 section 4.4.1.2).
    #[error("{source_blocks} source blocks for only {symbols} source symbols")]
    SourceBlocksExceedSymbols {
        /// Z.
        source_blocks: u8,
        /// Kt = ceil(F / T).
        symbols: u64,
    },
    /// The largest block would hold more than K'max = [`SOURCE_SYMBOLS_MAX`] source
    /// symbols (RFC 6330 section 4.4.1.2).
    #[error("block of {symbols} source symbols exceeds {max}", max = SOURCE_SYMBOLS_MAX)]
    BlockSymbolsTooMany {
        /// ceil(Kt / Z).
        symbols: u64,
    },
    /// The largest block would exceed [`BLOCK_BYTES_MAX_LIMIT`] bytes.
    #[error("block of {bytes} bytes exceeds {max}", max = BLOCK_BYTES_MAX_LIMIT)]
    BlockBytesTooLarge {
        /// K * T of the largest block.
        bytes: u64,
    },
    /// `block_bytes_max` was smaller than one symbol or larger than
    /// [`BLOCK_BYTES_MAX_LIMIT`].
    #[error("block size limit {block_bytes_max} is outside {symbol_size}..={max}", max = BLOCK_BYTES_MAX_LIMIT)]
    BlockBytesMaxInvalid {
        /// The limit requested.
        block_bytes_max: u64,
        /// The symbol size, the smallest usable limit.
        symbol_size: u16,
    },
    /// The object needs more than [`SOURCE_BLOCKS_MAX`] blocks of the requested size.
    #[error("object of {transfer_length} bytes needs {source_blocks} blocks, more than {max}", max = SOURCE_BLOCKS_MAX)]
    ObjectTooLarge {
        /// The transfer length requested.
        transfer_length: u64,
        /// The number of blocks it would need.
        source_blocks: u64,
    },
    /// A source block number was not below Z.
    #[error("source block number {sbn} out of range, object has {source_blocks} blocks")]
    SbnOutOfRange {
        /// The SBN given.
        sbn: u8,
        /// Z.
        source_blocks: u8,
    },
    /// Block data handed to the encoder was not exactly the block's length.
    #[error("block data is {actual} bytes, expected {expected}")]
    DataLength {
        /// The block's length.
        expected: u64,
        /// The length given.
        actual: u64,
    },
    /// An ESI exceeded [`ESI_MAX`], or a range of ESIs ran past it.
    #[error("encoding symbol id {esi} exceeds {max}", max = ESI_MAX)]
    EsiOutOfRange {
        /// The first offending ESI (it may exceed 24 bits).
        esi: u64,
    },
    /// More symbols were asked of one batch than [`SYMBOL_BATCH_MAX`].
    #[error("batch of {count} symbols exceeds {max}", max = SYMBOL_BATCH_MAX)]
    BatchTooLarge {
        /// The count requested.
        count: u32,
    },
    /// A received symbol was not exactly T bytes.
    #[error("symbol {esi} is {actual} bytes, expected {expected}")]
    SymbolLength {
        /// The symbol's ESI.
        esi: u32,
        /// T.
        expected: usize,
        /// Its length.
        actual: usize,
    },
    /// Fewer distinct symbols than K: decoding cannot succeed yet, raptorq not called.
    #[error("{have} distinct symbols, need at least {need}")]
    NotEnoughSymbols {
        /// Distinct symbols received.
        have: u64,
        /// K.
        need: u32,
    },
    /// raptorq could not decode from these symbols (a singular system, rare with K + 2
    /// or more): collect more symbols and try again.
    #[error("decoding failed with {symbols} distinct symbols for {need} source symbols")]
    DecodeFailed {
        /// Distinct symbols handed to raptorq.
        symbols: u64,
        /// K.
        need: u32,
    },
}

/// RFC 6330 Object Transmission Information (section 3.3.2 Common FEC OTI and section
/// 3.3.3 Scheme-Specific FEC OTI).
///
/// The fields are public for convenience; every function taking an `Oti` validates it
/// first (see [`Oti::validate`]), so a hand-built invalid one yields an error, not a
/// panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Oti {
    /// F: the object's length in bytes (40 bits on the wire).
    pub transfer_length: u64,
    /// T: bytes per symbol.
    pub symbol_size: u16,
    /// Z: number of source blocks.
    pub source_blocks: u8,
    /// N: number of sub-blocks per source block; satcast requires 1.
    pub sub_blocks: u16,
    /// Al: symbol alignment in bytes.
    pub alignment: u8,
}

/// One source block of an object (RFC 6330 section 4.4.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Block {
    /// Source block number.
    pub sbn: u8,
    /// Byte offset of the block in the object.
    pub offset: u64,
    /// Bytes of real data. Only the last block can be shorter than K * T; the encoder
    /// pads it with zeros (section 4.4.1.2) and the decoder strips the padding.
    pub len: u64,
    /// K: source symbols in this block.
    pub source_symbols: u32,
}

/// The block sizes of a valid OTI: (KL, KS, ZL) of Partition[Kt, Z].
#[derive(Debug, Clone, Copy)]
struct Layout {
    kl: u64,
    ks: u64,
    zl: u64,
}

/// Partition[I, J] of RFC 6330 section 4.4.1.2: splits I into J parts as equal as
/// possible, returning (IL, IS, JL, JS): JL parts of IL and JS parts of IS. None if J is 0.
fn partition(i: u64, j: u64) -> Option<(u64, u64, u64, u64)> {
    if j == 0 {
        return None;
    }
    let il = i.div_ceil(j);
    let is = i / j;
    let jl = i - is * j;
    let js = j - jl;
    Some((il, is, jl, js))
}

impl Oti {
    /// Encodes as the 12 bytes of RFC 6330 section 3.3.2 (F: 40 bits, reserved: 8 bits,
    /// T: 16 bits) followed by section 3.3.3 (Z: 8 bits, N: 16 bits, Al: 8 bits), big
    /// endian. Only the low 40 bits of F are written; a valid OTI always fits.
    pub fn encode(&self) -> [u8; OTI_LEN] {
        let [_, _, _, f0, f1, f2, f3, f4] = self.transfer_length.to_be_bytes();
        let [t0, t1] = self.symbol_size.to_be_bytes();
        let [n0, n1] = self.sub_blocks.to_be_bytes();
        [f0, f1, f2, f3, f4, 0, t0, t1, self.source_blocks, n0, n1, self.alignment]
    }

    /// Decodes and validates 12 bytes laid out as in [`Oti::encode`]. A returned `Oti`
    /// passes [`Oti::validate`].
    pub fn decode(bytes: &[u8]) -> Result<Oti, FecError> {
        let array: [u8; OTI_LEN] = bytes.try_into().map_err(|_| FecError::OtiLength { len: bytes.len() })?;
        let [f0, f1, f2, f3, f4, reserved, t0, t1, z, n0, n1, al] = array;
        if reserved != 0 {
            return Err(FecError::OtiReserved { value: reserved });
        }
        let oti = Oti {
            transfer_length: u64::from_be_bytes([0, 0, 0, f0, f1, f2, f3, f4]),
            symbol_size: u16::from_be_bytes([t0, t1]),
            source_blocks: z,
            sub_blocks: u16::from_be_bytes([n0, n1]),
            alignment: al,
        };
        oti.validate()?;
        Ok(oti)
    }

    /// Checks every constraint that keeps raptorq from panicking and bounds decoder
    /// memory: 1 <= F <= [`TRANSFER_LENGTH_MAX`], Al in {1, 2, 4, 8}, 0 < T <=
    /// [`SYMBOL_SIZE_MAX`] with T % Al == 0, N == 1, 1 <= Z <= Kt, ceil(Kt / Z) <=
    /// [`SOURCE_SYMBOLS_MAX`] and ceil(Kt / Z) * T <= [`BLOCK_BYTES_MAX_LIMIT`].
    pub fn validate(&self) -> Result<(), FecError> {
        self.layout().map(|_| ())
    }

    /// Validates and computes Partition[Kt, Z]; all arithmetic after the checks is
    /// bounded (K * T <= 64 MiB, Z <= 255) and cannot overflow.
    fn layout(&self) -> Result<Layout, FecError> {
        let f = self.transfer_length;
        if f == 0 {
            return Err(FecError::TransferLengthZero);
        }
        if f > TRANSFER_LENGTH_MAX {
            return Err(FecError::TransferLengthTooLarge { transfer_length: f });
        }
        if !matches!(self.alignment, 1 | 2 | 4 | 8) {
            return Err(FecError::AlignmentInvalid { alignment: self.alignment });
        }
        if self.symbol_size == 0 {
            return Err(FecError::SymbolSizeZero);
        }
        if self.symbol_size % u16::from(self.alignment) != 0 {
            return Err(FecError::SymbolSizeUnaligned { symbol_size: self.symbol_size, alignment: self.alignment });
        }
        if self.symbol_size > SYMBOL_SIZE_MAX {
            return Err(FecError::SymbolSizeTooLarge { symbol_size: self.symbol_size });
        }
        if self.sub_blocks != 1 {
            return Err(FecError::SubBlockingUnsupported { sub_blocks: self.sub_blocks });
        }
        if self.source_blocks == 0 {
            return Err(FecError::SourceBlocksZero);
        }
        let t = u64::from(self.symbol_size);
        let kt = f.div_ceil(t);
        let z = u64::from(self.source_blocks);
        if kt < z {
            return Err(FecError::SourceBlocksExceedSymbols { source_blocks: self.source_blocks, symbols: kt });
        }
        let (kl, ks, zl, _zs) = partition(kt, z).ok_or(FecError::SourceBlocksZero)?;
        if kl > u64::from(SOURCE_SYMBOLS_MAX) {
            return Err(FecError::BlockSymbolsTooMany { symbols: kl });
        }
        // kl <= 56403 and t <= 8192, so this cannot overflow.
        if kl * t > BLOCK_BYTES_MAX_LIMIT {
            return Err(FecError::BlockBytesTooLarge { bytes: kl * t });
        }
        Ok(Layout { kl, ks, zl })
    }

    /// The symbol size a sender uses for an object of `transfer_length` bytes when its
    /// configured size is `symbol_size`: an object smaller than one symbol (a patch, a short
    /// notice) gets one symbol of its own length, rounded up to [`SYMBOL_ALIGNMENT`], so it
    /// does not air a symbol of padding in every datagram.
    pub fn symbol_size_for(transfer_length: u64, symbol_size: u16) -> u16 {
        let align = u64::from(SYMBOL_ALIGNMENT);
        let fitted = transfer_length.div_ceil(align).max(1) * align;
        u16::try_from(fitted).map_or(symbol_size, |fitted| fitted.min(symbol_size))
    }

    /// The OTI a satcast sender uses for an object of `transfer_length` bytes: symbol
    /// size `symbol_size` (a multiple of [`SYMBOL_ALIGNMENT`]), no sub-blocking, and the
    /// fewest blocks such that none holds more than min(K'max, block_bytes_max / T)
    /// source symbols. Errors if that needs more than 255 blocks (with
    /// [`DEFAULT_BLOCK_BYTES_MAX`], objects above about [`DEFAULT_OBJECT_BYTES_MAX`]).
    pub fn new_for_object(transfer_length: u64, symbol_size: u16, block_bytes_max: u64) -> Result<Oti, FecError> {
        if transfer_length == 0 {
            return Err(FecError::TransferLengthZero);
        }
        if symbol_size == 0 {
            return Err(FecError::SymbolSizeZero);
        }
        if symbol_size % u16::from(SYMBOL_ALIGNMENT) != 0 {
            return Err(FecError::SymbolSizeUnaligned { symbol_size, alignment: SYMBOL_ALIGNMENT });
        }
        if symbol_size > SYMBOL_SIZE_MAX {
            return Err(FecError::SymbolSizeTooLarge { symbol_size });
        }
        let t = u64::from(symbol_size);
        if block_bytes_max < t || block_bytes_max > BLOCK_BYTES_MAX_LIMIT {
            return Err(FecError::BlockBytesMaxInvalid { block_bytes_max, symbol_size });
        }
        // At least 1: block_bytes_max >= t was checked above.
        let k_max = (block_bytes_max / t).min(u64::from(SOURCE_SYMBOLS_MAX));
        let kt = transfer_length.div_ceil(t);
        let z = kt.div_ceil(k_max);
        let source_blocks = u8::try_from(z).map_err(|_| FecError::ObjectTooLarge { transfer_length, source_blocks: z })?;
        let oti = Oti { transfer_length, symbol_size, source_blocks, sub_blocks: 1, alignment: SYMBOL_ALIGNMENT };
        // Holds by construction (Z <= Kt, ceil(Kt/Z) <= k_max); checked anyway so this
        // function can never hand out an OTI that decode would reject.
        oti.validate()?;
        Ok(oti)
    }

    /// The same OTI as raptorq's type, for raptorq's whole-object `Encoder`/`Decoder`.
    /// Built from the wire bytes, which never panics; raptorq itself may still panic on
    /// an OTI that fails [`Oti::validate`], so validate first.
    pub fn to_raptorq(&self) -> ObjectTransmissionInformation {
        // ObjectTransmissionInformation::new asserts; deserialize does not.
        ObjectTransmissionInformation::deserialize(&self.encode())
    }

    /// The block with source block number `sbn`, after validating the OTI.
    pub fn block(&self, sbn: u8) -> Result<Block, FecError> {
        let layout = self.layout()?;
        if sbn >= self.source_blocks {
            return Err(FecError::SbnOutOfRange { sbn, source_blocks: self.source_blocks });
        }
        let t = u64::from(self.symbol_size);
        let s = u64::from(sbn);
        // The first ZL blocks have KL symbols, the rest KS (RFC 6330 section 4.4.1.2).
        let (k, first_symbol) =
            if s < layout.zl { (layout.kl, s * layout.kl) } else { (layout.ks, layout.zl * layout.kl + (s - layout.zl) * layout.ks) };
        let offset = first_symbol * t;
        // Every block starts before F: the last starts at or before (Kt - 1) * T < F.
        let len = (k * t).min(self.transfer_length.saturating_sub(offset));
        let source_symbols = u32::try_from(k).map_err(|_| FecError::BlockSymbolsTooMany { symbols: k })?;
        Ok(Block { sbn, offset, len, source_symbols })
    }
}

/// Every source block of the object in SBN order, covering bytes [0, F) exactly. Empty
/// if the OTI fails [`Oti::validate`].
pub fn blocks(oti: &Oti) -> Vec<Block> {
    if oti.validate().is_err() {
        return Vec::new();
    }
    (0..oti.source_blocks).filter_map(|sbn| oti.block(sbn).ok()).collect()
}

/// BLAKE3 of one block's data, as named in the manifest, to detect a poisoned block.
pub fn block_hash(data: &[u8]) -> [u8; 32] {
    *blake3::hash(data).as_bytes()
}

/// Encodes one source block. Construction solves for the intermediate symbols once
/// (RFC 6330 section 5.3.3.4); each repair symbol after that costs a few XORs of T bytes.
/// Holds about 2 * K * T + L * T bytes (the padded block, raptorq's copy of it, and the
/// intermediate symbols).
pub struct BlockEncoder {
    sbn: u8,
    source_symbols: u32,
    symbol_size: usize,
    /// The block padded with zeros to K * T: source symbols are served from here.
    padded: Vec<u8>,
    encoder: SourceBlockEncoder,
}

impl std::fmt::Debug for BlockEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the data: a block is megabytes.
        f.debug_struct("BlockEncoder")
            .field("sbn", &self.sbn)
            .field("source_symbols", &self.source_symbols)
            .field("symbol_size", &self.symbol_size)
            .finish_non_exhaustive()
    }
}

impl BlockEncoder {
    /// An encoder for block `sbn` of an object with this OTI; `data` is exactly that
    /// block's bytes (`oti.block(sbn)?.len` of them).
    pub fn new(oti: &Oti, sbn: u8, data: &[u8]) -> Result<BlockEncoder, FecError> {
        let block = oti.block(sbn)?;
        if data.len() as u64 != block.len {
            return Err(FecError::DataLength { expected: block.len, actual: data.len() as u64 });
        }
        let symbol_size = usize::from(oti.symbol_size);
        let padded_len = (block.source_symbols as usize) * symbol_size;
        let mut padded = Vec::with_capacity(padded_len);
        padded.extend_from_slice(data);
        padded.resize(padded_len, 0);
        let encoder = SourceBlockEncoder::new(sbn, &oti.to_raptorq(), &padded);
        Ok(BlockEncoder { sbn, source_symbols: block.source_symbols, symbol_size, padded, encoder })
    }

    /// K: source symbols in this block.
    pub fn source_symbols(&self) -> u32 {
        self.source_symbols
    }

    /// Appends exactly T bytes to `out` (after whatever it holds, so a datagram header
    /// can be written first): the encoding symbol with this ESI. ESI < K gives source
    /// symbol ESI; ESI >= K the repair symbol a standard RFC 6330 decoder expects for that
    /// ESI (internal symbol id ESI + K' - K, section 5.3.1).
    pub fn symbol_into(&self, esi: u32, out: &mut Vec<u8>) -> Result<(), FecError> {
        if esi > ESI_MAX {
            return Err(FecError::EsiOutOfRange { esi: u64::from(esi) });
        }
        if esi < self.source_symbols {
            let symbol = self.source_symbol(esi)?;
            out.extend_from_slice(symbol);
        } else {
            // raptorq 2.x: repair_packets(r, n) yields ESIs K + r .. K + r + n.
            let packets = self.encoder.repair_packets(esi - self.source_symbols, 1);
            let packet = packets.first().ok_or(FecError::EsiOutOfRange { esi: u64::from(esi) })?;
            out.extend_from_slice(packet.data());
        }
        Ok(())
    }

    /// `count` consecutive encoding symbols from `first_esi`, as (ESI, T bytes) pairs.
    /// Meant for repair (ESI >= K), but ESIs below K give source symbols as in
    /// [`BlockEncoder::symbol_into`]. The whole range must lie within 0..=[`ESI_MAX`] and
    /// `count` must not exceed [`SYMBOL_BATCH_MAX`].
    pub fn repair_symbols(&self, first_esi: u32, count: u32) -> Result<Vec<(u32, Vec<u8>)>, FecError> {
        if count > SYMBOL_BATCH_MAX {
            return Err(FecError::BatchTooLarge { count });
        }
        if count == 0 {
            return Ok(Vec::new());
        }
        let last = u64::from(first_esi) + u64::from(count) - 1;
        if last > u64::from(ESI_MAX) {
            return Err(FecError::EsiOutOfRange { esi: last });
        }
        let mut out = Vec::with_capacity(count as usize);
        // `last` <= ESI_MAX, so these u32 additions cannot overflow.
        let source_end = (first_esi + count).min(self.source_symbols);
        for esi in first_esi..source_end {
            out.push((esi, self.source_symbol(esi)?.to_vec()));
        }
        let repair_first = first_esi.max(self.source_symbols);
        let repair_count = (first_esi + count).saturating_sub(repair_first);
        if repair_count > 0 {
            let packets = self.encoder.repair_packets(repair_first - self.source_symbols, repair_count);
            out.extend(packets.into_iter().map(|p| {
                let (id, data) = p.split();
                (id.encoding_symbol_id(), data)
            }));
        }
        Ok(out)
    }

    /// Source symbol `esi` (< K) of the padded block.
    fn source_symbol(&self, esi: u32) -> Result<&[u8], FecError> {
        self.padded.chunks_exact(self.symbol_size).nth(esi as usize).ok_or(FecError::EsiOutOfRange { esi: u64::from(esi) })
    }
}

/// Decodes block `sbn` from received (ESI, symbol) pairs, returning exactly the block's
/// `len` bytes. Symbols are checked before raptorq sees them: an ESI above [`ESI_MAX`]
/// or a symbol not T bytes long is an error; duplicate ESIs are ignored (the first
/// copy is kept). Fewer than K distinct symbols is [`FecError::NotEnoughSymbols`]
/// without calling raptorq; K or more that raptorq cannot decode is
/// [`FecError::DecodeFailed`]: collect more and retry. All received source symbols and
/// the lowest-ESI K + [`DECODE_OVERHEAD_SYMBOLS_MAX`] repair symbols are used; the rest
/// are dropped, which bounds memory and decoding time.
pub fn decode_block(oti: &Oti, sbn: u8, symbols: impl IntoIterator<Item = (u32, Vec<u8>)>) -> Result<Vec<u8>, FecError> {
    let block = oti.block(sbn)?;
    let k = block.source_symbols;
    let symbol_size = usize::from(oti.symbol_size);
    let repair_kept_max = (k as usize) + (DECODE_OVERHEAD_SYMBOLS_MAX as usize);
    let mut source: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let mut repair: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    for (esi, data) in symbols {
        if esi > ESI_MAX {
            return Err(FecError::EsiOutOfRange { esi: u64::from(esi) });
        }
        if data.len() != symbol_size {
            return Err(FecError::SymbolLength { esi, expected: symbol_size, actual: data.len() });
        }
        if esi < k {
            source.entry(esi).or_insert(data);
        } else if repair.len() < repair_kept_max {
            repair.entry(esi).or_insert(data);
        }
    }
    let have = (source.len() + repair.len()) as u64;
    if have < u64::from(k) {
        return Err(FecError::NotEnoughSymbols { have, need: k });
    }
    let len = usize::try_from(block.len).map_err(|_| FecError::BlockBytesTooLarge { bytes: block.len })?;
    if source.len() == k as usize {
        // Every source symbol is here (keys are exactly 0..K): no decoding needed.
        let mut out = Vec::with_capacity(k as usize * symbol_size);
        for data in source.into_values() {
            out.extend_from_slice(&data);
        }
        out.truncate(len);
        return Ok(out);
    }
    let take = repair_kept_max.saturating_sub(source.len());
    let used = (source.len() + repair.len().min(take)) as u64;
    let packets =
        source.into_iter().chain(repair.into_iter().take(take)).map(|(esi, data)| EncodingPacket::new(PayloadId::new(sbn, esi), data));
    let block_bytes = u64::from(k) * u64::from(oti.symbol_size);
    let mut decoder = SourceBlockDecoder::new(sbn, &oti.to_raptorq(), block_bytes);
    match decoder.decode(packets) {
        Some(mut out) => {
            out.truncate(len);
            Ok(out)
        }
        None => Err(FecError::DecodeFailed { symbols: used, need: k }),
    }
}

/// One plan entry's progress inside [`Interleaved`].
#[derive(Debug, Clone)]
struct Stream {
    sbn: u8,
    /// Position in the plan, the last tie-breaker.
    index: usize,
    first_esi: u32,
    count: u32,
    emitted: u32,
}

impl Stream {
    /// Compares the ideal positions (emitted + 0.5) / count of the next symbols, exactly:
    /// (2a + 1) / 2ca vs (2b + 1) / 2cb  <=>  (2a + 1) * cb vs (2b + 1) * ca, in u128.
    fn ideal_cmp(&self, other: &Stream) -> Ordering {
        let lhs = (2 * u128::from(self.emitted) + 1) * u128::from(other.count);
        let rhs = (2 * u128::from(other.emitted) + 1) * u128::from(self.count);
        lhs.cmp(&rhs).then(self.sbn.cmp(&other.sbn)).then(self.index.cmp(&other.index))
    }
}

impl PartialEq for Stream {
    fn eq(&self, other: &Stream) -> bool {
        self.ideal_cmp(other) == Ordering::Equal
    }
}
impl Eq for Stream {}
impl PartialOrd for Stream {
    fn partial_cmp(&self, other: &Stream) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Stream {
    fn cmp(&self, other: &Stream) -> Ordering {
        // BinaryHeap pops the greatest; we want the smallest ideal position.
        other.ideal_cmp(self)
    }
}

/// The interleaved sending order of a plan; see [`interleave`].
#[derive(Debug, Clone)]
pub struct Interleaved {
    heap: BinaryHeap<Stream>,
    remaining: u64,
}

impl Iterator for Interleaved {
    type Item = (u8, u32);

    fn next(&mut self) -> Option<(u8, u32)> {
        let mut stream = self.heap.pop()?;
        // emitted < count and the range was clipped to ESI_MAX, so no overflow.
        let item = (stream.sbn, stream.first_esi + stream.emitted);
        stream.emitted += 1;
        if stream.emitted < stream.count {
            self.heap.push(stream);
        }
        self.remaining = self.remaining.saturating_sub(1);
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match usize::try_from(self.remaining) {
            Ok(n) => (n, Some(n)),
            Err(_) => (usize::MAX, None),
        }
    }
}

/// Spreads the symbols of several blocks over one sending sequence, so that a loss burst
/// costs every block a little rather than one block a lot. `plan` holds (SBN, first
/// ESI, count) entries; the result yields every (SBN, ESI) of every entry exactly once,
/// each entry's symbols spread evenly over the whole sequence even when counts differ:
/// weighted fair queueing, always emitting from the entry whose next symbol's ideal
/// position (i + 0.5) / count is smallest, ties to the lower SBN, then the earlier entry.
/// Deterministic, integer-only, O(entries) memory and O(log entries) per symbol. Ranges
/// reaching past [`ESI_MAX`] are clipped to it.
pub fn interleave(plan: &[(u8, u32, u32)]) -> Interleaved {
    let mut heap = BinaryHeap::with_capacity(plan.len());
    let mut remaining = 0u64;
    for (index, &(sbn, first_esi, count)) in plan.iter().enumerate() {
        let room = (ESI_MAX + 1).saturating_sub(first_esi);
        let count = count.min(room);
        if count > 0 {
            remaining += u64::from(count);
            heap.push(Stream { sbn, index, first_esi, count, emitted: 0 });
        }
    }
    Interleaved { heap, remaining }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_object_under_one_symbol_gets_a_symbol_of_its_size() {
        assert_eq!(Oti::symbol_size_for(482, 1436), 484);
        assert_eq!(Oti::symbol_size_for(1, 1436), 4);
        assert_eq!(Oti::symbol_size_for(1436, 1436), 1436);
        assert_eq!(Oti::symbol_size_for(10_000_000, 1436), 1436);
        let oti = Oti::new_for_object(482, Oti::symbol_size_for(482, 1436), DEFAULT_BLOCK_BYTES_MAX).expect("oti");
        assert_eq!((oti.symbol_size, blocks(&oti)[0].source_symbols), (484, 1));
    }

    use super::*;

    #[test]
    fn partition_matches_raptorq() {
        for i in 1u32..300 {
            for j in 1u32..=i.min(40) {
                let ours = partition(u64::from(i), u64::from(j));
                let (a, b, c, d) = raptorq::partition(i, j);
                let theirs = (u64::from(a), u64::from(b), u64::from(c), u64::from(d));
                assert_eq!(ours, Some(theirs), "Partition[{i}, {j}]");
            }
        }
        assert_eq!(partition(5, 0), None);
    }

    #[test]
    fn invalid_hand_built_oti_gives_errors_not_panics() {
        let bad = Oti { transfer_length: 10, symbol_size: 0, source_blocks: 1, sub_blocks: 1, alignment: 0 };
        assert!(blocks(&bad).is_empty());
        assert_eq!(bad.block(0), Err(FecError::AlignmentInvalid { alignment: 0 }));
        assert!(BlockEncoder::new(&bad, 0, &[0; 10]).is_err());
        assert!(decode_block(&bad, 0, Vec::new()).is_err());
    }

    #[test]
    fn interleave_clips_at_esi_max() {
        let got: Vec<_> = interleave(&[(0, ESI_MAX - 1, 5), (1, ESI_MAX + 1, 3)]).collect();
        assert_eq!(got, vec![(0, ESI_MAX - 1), (0, ESI_MAX)]);
    }
}
