//! The snapshot form of `State`: a round trip is exact, and a forged structure is refused.

use bincode::config::standard;
use subledger_core::*;

use crate::support::*;

/// Decoding untrusted bytes always runs with a size limit: bincode then refuses any length
/// that claims more memory than the limit before allocating it.
fn limited() -> impl bincode::config::Config {
    standard().with_limit::<1_000_000>()
}

fn sample() -> State {
    Given::new()
        .primary("prim0001", "-100")
        .own_sub("prim0001", "suba0001")
        .shared_sub("prim0001", "subb0001")
        .top_up("prim0001", "50")
        .transfer("prim0001", "prim0001", "suba0001", "20")
        .lend("prim0001", "prim0001", "suba0001", "10")
        .charge("subb0001", "1.5")
        .suspended("suba0001")
        .state()
        .clone()
}

#[test]
fn a_state_round_trips_exactly() {
    let state = sample();
    let bytes = bincode::encode_to_vec(&state, standard()).unwrap();
    let (decoded, used): (State, usize) = bincode::decode_from_slice(&bytes, standard()).unwrap();
    assert_eq!(used, bytes.len());
    assert_eq!(decoded, state);
    assert_eq!(decoded.state_hash(), state.state_hash());
    assert_eq!(
        decoded.account_id(&key("subb0001")),
        state.account_id(&key("subb0001"))
    );
    assert_eq!(
        decoded.command_count(),
        4,
        "top-up, transfer, credit transfer, charge"
    );
}

/// An account in the middle of a rotation keeps its second secret apart from the account
/// (`State::second_secrets`): the state still encodes, decodes, hashes and compares as one.
#[test]
fn a_state_mid_rotation_round_trips_exactly() {
    let state = Given::new()
        .primary("prim0001", "-100")
        .own_sub("prim0001", "suba0001")
        .ok(create_secret("suba0001", 7))
        .has_secrets("suba0001", &[1, 7])
        .state()
        .clone();
    let bytes = bincode::encode_to_vec(&state, standard()).unwrap();
    let (decoded, used): (State, usize) = bincode::decode_from_slice(&bytes, standard()).unwrap();
    assert_eq!(used, bytes.len());
    assert_eq!(decoded, state);
    assert_eq!(decoded.state_hash(), state.state_hash());
    let id = state.account_id(&key("suba0001")).unwrap();
    assert_eq!(&decoded.secret_ids(id)[..], [secret_id(1), secret_id(7)]);
    // Revoked back to one, the state equals a state that never rotated but for the id.
    let mut rotated = decoded;
    rotated
        .apply(
            rotated.last_seq().next(),
            rotated.last_at(),
            &Event::SecretRevoked {
                account: id,
                secret: secret_id(1),
            },
        )
        .unwrap();
    assert_eq!(&rotated.secret_ids(id)[..], [secret_id(7)]);
    let bytes = bincode::encode_to_vec(&rotated, standard()).unwrap();
    let (again, _): (State, usize) = bincode::decode_from_slice(&bytes, standard()).unwrap();
    assert_eq!(again, rotated);
}

#[test]
fn a_read_side_copy_round_trips_without_commands() {
    let mut state = sample();
    state.forget_command_index();
    let bytes = bincode::encode_to_vec(&state, standard()).unwrap();
    let (decoded, _): (State, usize) = bincode::decode_from_slice(&bytes, standard()).unwrap();
    assert_eq!(decoded.command_count(), 0);
    assert_eq!(decoded, state);
}

#[test]
fn every_truncation_and_many_byte_flips_are_refused_or_decode_to_a_valid_state() {
    let state = sample();
    let bytes = bincode::encode_to_vec(&state, standard()).unwrap();
    for cut in 0..bytes.len() {
        let result: Result<(State, usize), _> =
            bincode::decode_from_slice(&bytes[..cut], limited());
        assert!(result.is_err(), "a truncation at {cut} decoded");
    }
    for index in 0..bytes.len() {
        for bit in [0x01, 0x10, 0x80] {
            let mut damaged = bytes.clone();
            damaged[index] ^= bit;
            // Either refused, or (when the flip lands in a value such as a name-free field
            // that stays valid) a state that passes every structural check.
            if let Ok((decoded, _)) = bincode::decode_from_slice::<State, _>(&damaged, limited()) {
                assert!(
                    decoded.check_invariants().is_ok(),
                    "flip at {index} broke an invariant"
                );
            }
        }
    }
}
