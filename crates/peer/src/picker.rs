//! Piece picker (being written).
