"""mer: multimodal emotion recognition that stays accurate when modalities go missing (README.md)."""
