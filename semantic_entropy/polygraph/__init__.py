"""polygraph"""
