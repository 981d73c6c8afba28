"""headlab dashboard entry point: `headlab dashboard [--data DIR]`, or
`streamlit run dashboard/app.py -- --data DIR`. Pages live in dashboard/views/."""

from __future__ import annotations

import streamlit as st

from dashboard import ui

st.set_page_config(page_title="headlab", layout="wide")

PAGES = [
    st.Page("views/overview.py", title="Overview", default=True),
    st.Page("views/head_map.py", title="Head map"),
    st.Page("views/head.py", title="Head"),
    st.Page("views/tokens.py", title="Token view"),
    st.Page("views/sinks.py", title="Sinks"),
    st.Page("views/retrieval.py", title="Retrieval"),
    st.Page("views/future_attention.py", title="Future attention"),
    st.Page("views/vision.py", title="Vision"),
    st.Page("views/sweeps.py", title="Sweeps"),
    st.Page("views/compare.py", title="Compare"),
]

page = st.navigation(PAGES)
address = st.get_option("server.address")
if address not in ui.LOOPBACK:
    st.sidebar.warning(
        f"Serving on {address or 'every interface'}: anyone who can reach this machine can read "
        "these runs. `headlab dashboard` binds to 127.0.0.1."
    )
ui.sidebar_run_picker(ui.data_dir())
page.run()
