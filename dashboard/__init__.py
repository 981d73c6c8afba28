"""The Streamlit dashboard: reads stored runs (parquet + manifest) and draws them; never torch."""
