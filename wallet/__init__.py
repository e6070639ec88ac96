"""The wallet: keys and signing, bech32m addresses, the encrypted key store and ``pouw-wallet``."""
