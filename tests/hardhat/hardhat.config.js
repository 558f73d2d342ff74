// Hardhat's node as a second EVM for the devnet scenario (tests/e2e/hardhat.rs): interval
// mining like a real chain (a block every 500 ms, not one per transaction), room for batches.
module.exports = {
  networks: {
    hardhat: {
      mining: { auto: false, interval: 500 },
      blockGasLimit: 300000000,
    },
  },
};
