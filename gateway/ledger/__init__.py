"""The ledger read back: spend reports, exports, the range a query may ask, the orphan sweep."""
