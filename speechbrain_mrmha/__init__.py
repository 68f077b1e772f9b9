"""speechbrain_mrmha: Multi-Resolution Multi-Head Attention pooling for
speaker embeddings (Wang et al., ICASSP 2020) as a SpeechBrain plugin."""
