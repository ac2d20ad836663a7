//! Order-preserving ("memcomparable") byte encodings shared by the MVCC layer and the SQL
//! layer's key encoding: comparing two encodings bytewise gives the same answer as comparing
//! the values they encode.

pub mod memcomparable;
