"""placeholder"""
import streamlit as st

st.title("future_attention")
