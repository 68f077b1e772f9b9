"""Layers (library ring): the pooling family on one masked core, the
ResNet-34 frame encoder, margin losses and the cosine classifier, and the
length bookkeeping between samples and frames. Imports nothing else of the
package."""
