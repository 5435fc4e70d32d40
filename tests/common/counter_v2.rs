//! Version 2 of the example counter, for the model-upgrade tests: it counts
//! in tenths, so upgrading multiplies the state by 10 and `INCREMENT` adds
//! ten tenths.

use reactordb::{Action, CounterModel, DocumentModel, DocumentType, ReduceError, Scope};

pub struct CounterV2;

impl DocumentModel for CounterV2 {
    fn document_type(&self) -> DocumentType {
        CounterModel::document_type()
    }
    fn version(&self) -> u32 {
        2
    }
    fn initial_state(&self, scope: &Scope) -> Vec<u8> {
        CounterModel.initial_state(scope)
    }
    fn reduce(&self, scope: &Scope, state: &[u8], action: &Action) -> Result<Vec<u8>, ReduceError> {
        let once = CounterModel.reduce(scope, state, action)?;
        let (before, after) = (
            CounterModel::value(state).unwrap_or(0),
            CounterModel::value(&once).unwrap_or(0),
        );
        Ok((before + (after - before) * 10).to_le_bytes().to_vec())
    }
    fn upgrade(
        &self,
        from_version: u32,
        _scope: &Scope,
        state: &[u8],
    ) -> Result<Vec<u8>, ReduceError> {
        if from_version != 1 {
            return Err(ReduceError::new("only from 1"));
        }
        let v = CounterModel::value(state).ok_or_else(|| ReduceError::new("bad state"))?;
        Ok((v * 10).to_le_bytes().to_vec())
    }
}
